"""Event-source wiring: what invokes the functions, from their events in the template.

`Api` events become the local gateway's routes, `DynamoDB` events stream pumps, `Schedule` / `ScheduleV2`
events the scheduler's schedules; other event types are not emulated, and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from local.emulators.gateway import Route
from local.emulators.runtime import FunctionRuntime, InvokeResult
from local.emulators.scheduler import Scheduler, ScheduleSpec, rate_seconds
from local.emulators.stream_mapping import StreamMapping
from local.emulators.stream_pump import StreamPump
from local.stack.options import StackOptions
from local.template import IMPLICIT_API, FunctionSpec, Resolver, Template

_log = logging.getLogger("local.stack")
EMULATED_EVENTS = frozenset({"Api", "DynamoDB", "Schedule", "ScheduleV2"})


@dataclass(frozen=True)
class Apis:
    """The template's REST APIs as the local gateway serves them."""

    routes: list[Route]
    stages: dict[str, str]  # API logical id -> its stage, for every API with a route

    def url(self, template: Template, stage_url: Callable[[str], str]) -> str | None:
        """The URL of the template's first API with routes (its stage included), like the ApiUrl output."""
        for api_id in template.api_ids():
            if api_id in self.stages:
                return stage_url(self.stages[api_id])
        return None


def api_routes(template: Template, functions: Iterable[FunctionSpec], resolver: Resolver) -> Apis:
    routes, stages = [], {}
    for spec in functions:
        for event in spec.events_of("Api"):
            api_id = _api_of(event.properties)
            api = resolver.resolve(template.api_properties(api_id))
            stages[api_id] = str(api.get("StageName", "Prod"))
            path = str(resolver.resolve(event.properties["Path"]))
            local_id = resolver.values.refs[api_id]
            routes.append(
                _route(
                    spec.logical_id, event.properties, api, path=path, stage=stages[api_id], api_id=local_id
                )
            )
    return Apis(routes, stages)


def _api_of(event_properties: Mapping[str, Any]) -> str:
    """The logical id of the API an Api event belongs to (SAM's implicit API when it names none)."""
    api = event_properties.get("RestApiId")
    if isinstance(api, dict) and "Ref" in api:
        return str(api["Ref"])
    return str(api or IMPLICIT_API)


def _route(
    function: str, event: Mapping[str, Any], api: Mapping[str, Any], *, path: str, stage: str, api_id: str
) -> Route:
    """The route of one Api event (`api`: its API's resolved properties, Globals.Api merged in)."""
    default_authorizer = (api.get("Auth") or {}).get("DefaultAuthorizer", "NONE")
    return Route(
        stage=stage,
        method=str(event.get("Method", "any")).upper(),
        path=path,
        function=function,
        authorization=str((event.get("Auth") or {}).get("Authorizer") or default_authorizer),
        api_id=api_id,
        binary_media_types=tuple(str(t).replace("~1", "/") for t in api.get("BinaryMediaTypes") or []),
    )


def stream_pumps(
    functions: Iterable[FunctionSpec],
    runtimes: Mapping[str, FunctionRuntime],
    resolver: Resolver,
    *,
    streams: Any,
    send_to_queue: Callable[[str, str], None],
    options: StackOptions,
) -> list[StreamPump]:
    """A pump for every DynamoDB event, invoking its function as Lambda's event source mapping does."""
    pumps = []
    for spec in functions:
        runtime = runtimes[spec.logical_id]
        for event in spec.events_of("DynamoDB"):
            pumps.append(
                StreamPump(
                    StreamMapping.from_event(spec.logical_id, resolver.resolve(event.properties)),
                    function_arn=runtime.config.arn,
                    streams=streams,
                    invoke=_invoker(runtime, "stream"),
                    send_to_queue=send_to_queue,
                    region=options.region,
                    poll_interval=options.pump_poll_interval,
                    retry_delay=options.pump_retry_delay,
                    max_retry_delay=options.pump_max_retry_delay,
                )
            )
    return pumps


def _invoker(runtime: FunctionRuntime, source: str) -> Callable[[Any], InvokeResult]:
    return lambda event: runtime.invoke(event, source=source)


def schedules(functions: Iterable[FunctionSpec], resolver: Resolver) -> list[ScheduleSpec]:
    """Every Schedule and ScheduleV2 event (the scheduler runs them every --poll-interval seconds)."""
    found = []
    for spec in functions:
        for event in spec.events_of("Schedule", "ScheduleV2"):
            props = resolver.resolve(event.properties)
            expression = str(props.get("ScheduleExpression") or props.get("Schedule") or "")
            enabled = props.get("Enabled", True) is not False and props.get("State", "ENABLED") != "DISABLED"
            found.append(
                ScheduleSpec(spec.logical_id, event.name, event.type, expression, props.get("Input"), enabled)
            )
            if rate_seconds(expression) is None:
                _log.info("%s: %s is run every --poll-interval seconds locally", spec.logical_id, expression)
    return found


def scheduler(
    specs: list[ScheduleSpec], invoke: Callable[[str, Any], InvokeResult], options: StackOptions
) -> Scheduler | None:
    if not specs:
        return None
    return Scheduler(
        specs, invoke, interval=options.poll_interval, region=options.region, account=options.account
    )


def warn_of_events_not_emulated(functions: Iterable[FunctionSpec]) -> None:
    for spec in functions:
        for event in spec.events:
            if event.type not in EMULATED_EVENTS:
                _log.warning(
                    "%s: %s event %r is not emulated locally", spec.logical_id, event.type, event.name
                )
