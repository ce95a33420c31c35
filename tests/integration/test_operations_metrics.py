"""The template against the code: every metric in the tracker's namespace that an alarm or the dashboard
watches is emitted, with the dimensions the template gives it, by the code path that should make it move.

Each function is imported as Lambda imports it, with its service name and metrics namespace from the
template, and driven through a scenario (a forged callback, Klarna answering 500 to the poller, PutEvents
failing, ...) against DynamoDB Local, moto and the Klarna simulator over HTTP. The scenario's metrics are
read from the function's stdout, where Powertools writes them in Embedded Metric Format (what Lambda
turns into CloudWatch metrics), and each watched metric must be among its scenario's.
"""

import contextlib
import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.repository import SessionRepository
from local.emulators.fault_proxy import AwsFaults, FaultProxy
from local.klarna_simulator import KlarnaSimulator
from local.template import Template
from tests.support.functions import import_function, klarna_credentials_secret
from tests.support.klarna import simulated_klarna
from tests.support.lambda_runtime import LambdaContext, load_event, with_json_body
from tests.support.operations import TRACKER_NAMESPACE, Metric, tracker_metrics
from tests.support.template import create_table

pytestmark = pytest.mark.integration

SECRET = "scenario-secret-not-real-0123456789abcdef"
KLARNA_SESSIONS = "/hpp/v1/sessions"
# Klarna's answers the scenarios script, each one a kind of failure on the dashboard.
KLARNA_FAULTS: dict[str, dict[str, Any]] = {
    "unavailable": {"status": 500},
    "timeout": {"status": None, "delay": 1.0},  # the functions' Klarna timeout is 0.3 s here
    "rate_limited": {"status": 429, "headers": {"Retry-After": "0"}},
    "credentials_refused": {"status": 401},
    "rejected": {"status": 400},
    "bad_response": {"status": 200, "body": "not json"},
}


def session_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Functions:
    """The four functions, imported with the template's service names, and what they talk to."""

    template: Template
    environment: dict[str, str]
    klarna: KlarnaSimulator
    repository: SessionRepository
    moto_url: str
    modules: dict[str, ModuleType] = field(default_factory=dict)

    def load(self, logical_id: str, **overrides: str) -> ModuleType:
        """The function's module, imported again with its template settings and `overrides` (set while it
        imports; the module's environment stays set, for the clients made on first use)."""
        variables = self.template.function(logical_id).properties["Environment"]["Variables"]
        globals_ = self.template.document["Globals"]["Function"]["Environment"]["Variables"]
        from_template = {
            "POWERTOOLS_SERVICE_NAME": variables["POWERTOOLS_SERVICE_NAME"],
            "POWERTOOLS_METRICS_NAMESPACE": globals_["POWERTOOLS_METRICS_NAMESPACE"],
        }
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {**from_template, **overrides}.items():
                patch.setenv(name, value)
            module = import_function(logical_id.removesuffix("Function").lower())
        self.modules[logical_id] = module
        return module

    def track(
        self, sid: str, *, klarna_status: str | None = "WAITING", session_url: str | None = None
    ) -> None:
        """A session the tracker created (due for a poll at once), and Klarna's own copy of it."""
        self.repository.create_session(
            sid,
            expires_at=datetime.now(UTC) + timedelta(hours=40),
            session_url=session_url,
            callback_secret_hash=hash_callback_secret(SECRET),
        )
        if klarna_status is not None:
            self.klarna.add_session(sid, status=klarna_status)


@pytest.fixture(scope="module")
def functions(dynamodb_local: Any, moto_server: Any) -> Iterator[Functions]:
    dynamodb = boto3.client("dynamodb", endpoint_url=dynamodb_local.endpoint_url)
    table, state_table = f"sessions-{uuid.uuid4().hex[:8]}", f"state-{uuid.uuid4().hex[:8]}"
    create_table(dynamodb, "SessionsTable", table)
    create_table(dynamodb, "StateTable", state_table)
    bus = boto3.client("events", endpoint_url=moto_server.endpoint_url).create_event_bus(
        Name=f"bus-{uuid.uuid4().hex[:8]}"
    )
    with simulated_klarna() as klarna, pytest.MonkeyPatch.context() as patch:
        environment = {
            "TABLE_NAME": table,
            "STATE_TABLE_NAME": state_table,
            "KLARNA_API_URL": klarna.url,
            "KLARNA_CREDENTIALS_SECRET_ARN": klarna_credentials_secret(moto_server.endpoint_url, klarna),
            "KLARNA_TIMEOUT_SECONDS": "0.3",
            "EVENT_BUS_NAME": bus["EventBusArn"].rsplit("/", 1)[-1],
            "AWS_ENDPOINT_URL": moto_server.endpoint_url,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local.endpoint_url,
            # No TTL: DynamoDB Local deletes rows whose TTL has passed.
            "SESSION_RETENTION_DAYS": "0",
        }
        for name, value in environment.items():
            patch.setenv(name, value)
        # Rows created ten minutes ago: due for a poll now.
        past = lambda: datetime.now(UTC) - timedelta(minutes=10)  # noqa: E731
        repository = SessionRepository(table, dynamodb, retention_days=0, clock=past)
        yield Functions(Template.load(), environment, klarna, repository, moto_server.endpoint_url)
    dynamodb.delete_table(TableName=table)
    dynamodb.delete_table(TableName=state_table)


def emitted_by(run: Callable[[], object]) -> set[Metric]:
    """The metrics `run` makes the functions write to stdout (Embedded Metric Format), with dimensions."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run()
    found = set()
    for line in out.getvalue().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "_aws" not in record:
            continue
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dims = tuple(sorted((key, str(record[key])) for key in dimension_set))
                for metric in directive["Metrics"]:
                    found.add(Metric(directive["Namespace"], metric["Name"], dims))
    return found


# -- the scenarios: each drives one function down the path that should move its metrics -------------


def callback_event(sid: str, body: Any, *, secret: str = SECRET) -> dict[str, Any]:
    event = with_json_body(load_event("callback/in_progress"), body) if body is not None else None
    event = event or load_event("callback/empty_body")
    event["queryStringParameters"] = {"session_id": sid, "secret": secret}
    event["multiValueQueryStringParameters"] = {"session_id": [sid], "secret": [secret]}
    return event


def callback_body(sid: str, status: str, updated_at: str, **fields: str) -> dict[str, Any]:
    session = {"session_id": sid, "status": status, "updated_at": updated_at, **fields}
    return {"event_id": str(uuid.uuid4()), "session": session}


def invoke_callback(fns: Functions, *events: dict[str, Any]) -> None:
    handler = fns.modules.get("CallbackFunction") or fns.load("CallbackFunction")
    for event in events:
        handler.lambda_handler(event, LambdaContext())


def callbacks_recorded(fns: Functions) -> None:
    sid = session_id()
    fns.track(sid)
    invoke_callback(
        fns,
        callback_event(sid, callback_body(sid, "IN_PROGRESS", "2099-01-01T00:00:02Z")),  # applied
        callback_event(sid, callback_body(sid, "IN_PROGRESS", "2099-01-01T00:00:02Z")),  # duplicate
        callback_event(sid, callback_body(sid, "IN_PROGRESS", "2099-01-01T00:00:01Z")),  # stale
        callback_event(sid, callback_body(sid, "COMPLETED", "2099-01-01T00:00:03Z", authorization_token="t")),
        callback_event(sid, callback_body(sid, "IN_PROGRESS", "2099-01-01T00:00:04Z")),  # already final
    )


def forged_callback(fns: Functions) -> None:
    sid = session_id()
    fns.track(sid)
    invoke_callback(
        fns, callback_event(sid, callback_body(sid, "COMPLETED", "2099-01-01T00:00:00Z"), secret="x")
    )


def unknown_session_callback(fns: Functions) -> None:
    """Twice for an id neither the table nor Klarna knows: one read (404), then the 404 remembered."""
    sid = session_id()
    event = callback_event(sid, callback_body(sid, "IN_PROGRESS", "2099-01-01T00:00:00Z"))
    invoke_callback(fns, event, event)


def unknown_session_budget_spent(fns: Functions) -> None:
    """Unknown-session callbacks past a budget of one read a minute: refused (503), no read."""
    fns.load("CallbackFunction", UNKNOWN_SESSION_READS_PER_MINUTE="1")
    try:
        invoke_callback(
            fns,
            *(
                callback_event(sid, callback_body(sid, "IN_PROGRESS", "2099-01-01T00:00:00Z"))
                for sid in (session_id(), session_id())
            ),
        )
    finally:
        fns.load("CallbackFunction")  # the template's budget again, for the other scenarios


def malformed_callback(fns: Functions) -> None:
    sid = session_id()
    fns.track(sid)
    invoke_callback(
        fns, callback_event(sid, callback_body(session_id(), "IN_PROGRESS", "2099-01-01T00:00:00Z"))
    )


def callback_meets_klarna(kind: str) -> Callable[[Functions], None]:
    """An empty callback (settled by reading Klarna) while Klarna answers with a fault of `kind`."""

    def scenario(fns: Functions) -> None:
        sid = session_id()
        fns.track(sid)
        fault = fns.klarna.fail_always("GET", KLARNA_SESSIONS, **KLARNA_FAULTS[kind])
        try:
            invoke_callback(fns, callback_event(sid, None))
        finally:
            fns.klarna.remove_fault(fault)

    return scenario


def foreign_session_url(sid: str) -> str:
    """A stored session URL on another host than KLARNA_API_URL's: the credentials must not go there."""
    return f"https://klarna.example.invalid/hpp/v1/sessions/{sid}"


def callback_meets_a_foreign_session_url(fns: Functions) -> None:
    sid = session_id()
    fns.track(sid, session_url=foreign_session_url(sid))
    invoke_callback(fns, callback_event(sid, None))


def run_poller(fns: Functions) -> None:
    handler = fns.modules.get("PollerFunction") or fns.load("PollerFunction")
    handler.lambda_handler(load_event("poller/scheduled"), LambdaContext(timeout_seconds=60))


def poller_finds_changes(fns: Functions) -> None:
    sid = session_id()
    fns.track(sid, klarna_status="IN_PROGRESS")  # a callback lost: only the poller sees the change
    run_poller(fns)


def poller_meets_klarna(kind: str) -> Callable[[Functions], None]:
    def scenario(fns: Functions) -> None:
        fns.track(session_id())
        fault = fns.klarna.fail_always("GET", KLARNA_SESSIONS, **KLARNA_FAULTS[kind])
        try:
            run_poller(fns)
        finally:
            fns.klarna.remove_fault(fault)

    return scenario


def poller_meets_a_foreign_session_url(fns: Functions) -> None:
    sid = session_id()
    fns.track(sid, session_url=foreign_session_url(sid))
    run_poller(fns)


def publisher_publishes(fns: Functions) -> None:
    handler = fns.load("PublisherFunction")
    handler.lambda_handler(load_event("publisher/completed_authorization_token"), LambdaContext())


def publisher_meets_failing_put_events(fns: Functions) -> None:
    proxy = FaultProxy(fns.moto_url, AwsFaults(put_events_failure_rate=1.0), name="events").start()
    try:
        handler = fns.load("PublisherFunction", AWS_ENDPOINT_URL=proxy.url)
        answer = handler.lambda_handler(load_event("publisher/batch"), LambdaContext())
        assert answer["batchItemFailures"], "the records whose events failed are reported for a retry"
    finally:
        proxy.stop()


SCENARIOS: dict[str, Callable[[Functions], None]] = {
    "callbacks recorded": callbacks_recorded,
    "forged callback": forged_callback,
    "unknown-session callback": unknown_session_callback,
    "unknown-session budget spent": unknown_session_budget_spent,
    "malformed callback": malformed_callback,
    **{
        f"callback meets Klarna {kind}": callback_meets_klarna(kind)
        for kind in KLARNA_FAULTS
        if kind != "rejected"
    },
    "callback meets a foreign session URL": callback_meets_a_foreign_session_url,
    "poller finds changes": poller_finds_changes,
    "poller meets a foreign session URL": poller_meets_a_foreign_session_url,
    **{
        f"poller meets Klarna {kind}": poller_meets_klarna(kind)
        for kind in KLARNA_FAULTS
        if kind != "credentials_refused"
    },
    "poller meets Klarna credentials_refused": poller_meets_klarna("credentials_refused"),
    "publisher publishes": publisher_publishes,
    "PutEvents failing": publisher_meets_failing_put_events,
}

# The scenario that must move each watched metric (by name, or by name@service where services differ).
TRIGGERED_BY = {
    "KlarnaUrlRefused@hpp-callback": "callback meets a foreign session URL",
    "KlarnaUrlRefused@hpp-poller": "poller meets a foreign session URL",
    "Callback_applied": "callbacks recorded",
    "Callback_duplicate": "callbacks recorded",
    "Callback_stale": "callbacks recorded",
    "Callback_already_final": "callbacks recorded",
    "Error_forbidden": "forged callback",
    "UnknownSessionReads": "unknown-session callback",
    "UnknownSessionNotFoundCached": "unknown-session callback",
    "UnknownSessionReadsRefused": "unknown-session budget spent",
    "Error_not_found": "unknown-session callback",
    "Error_bad_request": "malformed callback",
    "Error_klarna_unavailable": "callback meets Klarna unavailable",
    "Error_klarna_timeout": "callback meets Klarna timeout",
    "Error_klarna_rate_limited": "callback meets Klarna rate_limited",
    "Error_klarna_credentials_refused": "callback meets Klarna credentials_refused",
    "Error_klarna_bad_response": "callback meets Klarna bad_response",
    "PollSessionsDue": "poller finds changes",
    "PollSessionsRead": "poller finds changes",
    "PollSessionsChanged": "poller finds changes",
    "PollSessionsExpired": "poller finds changes",
    "PollLagSeconds": "poller finds changes",
    "PollLostCallbackEvidence": "poller finds changes",
    "PollCatchUpReads": "poller finds changes",
    "PollErrors_KlarnaUnavailable": "poller meets Klarna unavailable",
    "PollErrors_KlarnaTimeout": "poller meets Klarna timeout",
    "PollErrors_KlarnaRejected": "poller meets Klarna rejected",
    "PollErrors_KlarnaBadResponse": "poller meets Klarna bad_response",
    "PollThrottles": "poller meets Klarna rate_limited",
    "KlarnaAuthFailed": "poller meets Klarna credentials_refused",
    "PublishedStatusChanged": "publisher publishes",
    "PublishedCompleted": "publisher publishes",
    "FailedRecords": "PutEvents failing",
    "FailedEntries": "PutEvents failing",
}


@pytest.fixture(scope="module")
def emitted(functions: Functions) -> Callable[[str], set[Metric]]:
    """The metrics of a scenario, run once however many metrics ask for it."""
    cache: dict[str, set[Metric]] = {}

    def of(scenario: str) -> set[Metric]:
        if scenario not in cache:
            cache[scenario] = emitted_by(lambda: SCENARIOS[scenario](functions))
        return cache[scenario]

    return of


WATCHED = sorted(tracker_metrics(), key=str)


def test_the_template_watches_metrics_of_every_function() -> None:
    services = {dict(metric.dimensions).get("service") for metric in WATCHED}
    assert services == {"hpp-callback", "hpp-poller", "hpp-publisher"}
    assert all(metric.namespace == TRACKER_NAMESPACE for metric in WATCHED)


@pytest.mark.parametrize("metric", WATCHED, ids=str)
def test_every_watched_metric_is_emitted_with_its_dimensions_by_its_scenario(
    metric: Metric, emitted: Callable[[str], set[Metric]]
) -> None:
    by_service = f"{metric.name}@{dict(metric.dimensions).get('service')}"
    scenario = TRIGGERED_BY.get(by_service) or TRIGGERED_BY.get(metric.name)
    assert scenario is not None, f"{metric}: no scenario here drives it; add one"
    found = emitted(scenario)
    same_name = sorted(str(m) for m in found if m.name == metric.name)
    assert metric in found, (
        f"{scenario!r} emitted {same_name or 'no ' + metric.name}, the template watches {metric}"
    )


def test_a_scenario_does_not_move_the_metrics_of_the_others(emitted: Callable[[str], set[Metric]]) -> None:
    """The scenarios are specific: a healthy run of callbacks raises no failure metric."""
    healthy = {metric.name for metric in emitted("callbacks recorded")}
    failures = {
        name.split("@")[0] for name in TRIGGERED_BY if name.startswith(("Error_", "Unknown", "KlarnaUrl"))
    }
    assert healthy.isdisjoint(failures), healthy & failures
