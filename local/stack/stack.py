"""The local stack: the whole application on 127.0.0.1, driven by template.yaml.

Starts DynamoDB Local (every table of the template, streams, indexes and TTL as defined), moto's server
(every event bus, archive, rule and queue of the template, the Klarna credentials secret, and an
`events_queue` subscribed to every event on the bus), the Klarna simulator (unless `--klarna-url`), every
function of the template in its own warm process with its template environment, and what invokes them on
AWS: the API gateway for `Api` events, the stream pump for `DynamoDB` events, the scheduler for `Schedule` /
`ScheduleV2` events. Provisioning (`provisioning`), each function's configuration (`functions`) and the
event sources (`event_sources`) have modules of their own; this one starts and stops them in order.

`stop()` may be called from any thread, also while `start()` runs (a signal during start-up): it ends
every process the stack started at once, and `start()` gives up at its next step (`StackStopped`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import boto3
from botocore.config import Config

from local.common.lifecycle import ChildProcesses, Startable
from local.emulators.dynamodb_local import DynamoDBLocal
from local.emulators.fault_proxy import FaultProxy
from local.emulators.gateway import Gateway
from local.emulators.metrics import CloudWatchMetrics
from local.emulators.moto_process import MotoError, MotoProcess
from local.emulators.runtime import FunctionRuntime, InvokeResult, lambda_error
from local.emulators.scheduler import Scheduler
from local.emulators.stream_pump import StreamPump
from local.klarna_simulator import KlarnaSimulator
from local.stack import event_sources
from local.stack.functions import FunctionContext, function_config
from local.stack.options import (
    API_URL_PLACEHOLDER,
    CALLBACK_BASE_URL_PARAMETER,
    FAKE_KEY,
    KLARNA_SECRET_PARAMETER,
    KLARNA_URL_PARAMETER,
    READY_KEYS,
    StackOptions,
)
from local.stack.provisioning import Provisioner
from local.template import (
    BUS_TYPE,
    TABLE_TYPE,
    FunctionSpec,
    LocalValues,
    Resolver,
    Template,
    TemplateError,
    as_string,
)

_log = logging.getLogger("local.stack")
_CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=30, retries={"mode": "standard", "total_max_attempts": 3}
)
# The pump retries a failed read itself (after a second, as Lambda's poller does): no SDK retries, so
# that a read against an emulator that is stopping fails at once instead of backing off.
_STREAMS_CONFIG = Config(connect_timeout=2, read_timeout=30, retries={"total_max_attempts": 1})


class StackStopped(Exception):
    """stop() was called while the stack was starting; it stopped instead."""


class LocalStack(Startable):
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.template = Template.load(self.options.template)
        self.processes = ChildProcesses()
        self.dynamodb = DynamoDBLocal(processes=self.processes)
        self.moto = MotoProcess(processes=self.processes)
        self.simulator: KlarnaSimulator | None = None
        self.proxies: list[FaultProxy] = []
        self.gateway: Gateway | None = None
        self.runtimes: dict[str, FunctionRuntime] = {}
        self.pumps: list[StreamPump] = []
        self.scheduler: Scheduler | None = None
        self.metrics: CloudWatchMetrics | None = None
        self.values = LocalValues()
        self.resources = Provisioner(self.template, self.options, self.values, self.client)
        self.ready: dict[str, Any] = {}
        self._klarna_url = ""
        self._klarna_secret_arn: str | None = None
        self._function_aws_url = ""
        self._function_dynamodb_url = ""
        self._apis = event_sources.Apis([], {})
        self._stop_lock = threading.Lock()
        self._stopping = threading.Event()
        self.stopped = threading.Event()  # set once stop() has stopped everything

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start everything, in order; the ready line's values. From the thread that stays the stack's
        (the main thread): the kernel ends the emulators when the thread that started them ends."""
        try:
            self._start()
        except BaseException as error:
            interrupted = self._stopping.is_set()  # then stop() is why it failed, whatever failed
            self.stop()
            if interrupted and not isinstance(error, StackStopped):
                raise StackStopped("stopped while starting") from error
            raise
        return self.ready

    def _start(self) -> None:
        steps = (
            self._start_emulators,
            self._start_klarna,
            self._provision,
            self._start_fault_proxies,
            self._start_gateway,
            self._start_functions,
            self._start_event_sources,
        )
        for step in steps:
            if self._stopping.is_set():
                raise StackStopped("stopped while starting")
            step()
        self.ready = self._ready_values()

    def stop(self) -> None:
        """Stop everything the stack started; from any thread, once (later calls wait for the first)."""
        with self._stop_lock:
            if self.stopped.is_set():
                return
            self._stopping.set()
            _log.info("stopping")
            sources = self._event_sources()
            for source in sources:
                source.halt()  # no new invocation
            # Every function instance, moto and DynamoDB Local end at once (invocations in flight with
            # them), and no process starts any more: a start() still running cannot leave one behind.
            self.processes.close()
            for step in self._stop_steps(sources):
                try:
                    step()
                except Exception:
                    _log.exception("while stopping")
            self.stopped.set()
            _log.info("stopped")

    def _stop_steps(self, sources: list[Scheduler | StreamPump]) -> list[Callable[[], None]]:
        """The components' own stops, now quick: their threads wait for nothing that still runs."""
        steps: list[Callable[[], None]] = [source.stop for source in sources]
        steps += [component.stop for component in (self.gateway, self.simulator) if component is not None]
        steps += [runtime.stop for runtime in self.runtimes.values()]
        steps += [self.metrics.stop] if self.metrics is not None else []
        steps += [proxy.stop for proxy in self.proxies]
        return [*steps, self.moto.stop, self.dynamodb.stop]

    def _event_sources(self) -> list[Scheduler | StreamPump]:
        return [*self.pumps, *([self.scheduler] if self.scheduler is not None else [])]

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def child_pids(self) -> list[int]:
        """Every process the stack started (emulators and function instances)."""
        pids = [self.dynamodb.pid, self.moto.pid]
        for runtime in self.runtimes.values():
            pids += runtime.pids
        return [pid for pid in pids if pid is not None]

    def healthy(self) -> str | None:
        """None while the emulators run (or the stack is stopping); otherwise which one stopped."""
        if self.stopping:
            return None
        if not self.dynamodb.running:
            return "DynamoDB Local exited"
        if not self.moto.running:
            return "moto exited"
        return None

    def invoke(self, function: str, event: Any, *, source: str = "invoke") -> InvokeResult:
        runtime = self.runtimes.get(function)
        if runtime is None:
            return InvokeResult(
                "", ok=False, error=lambda_error("ResourceNotFoundException", f"no function {function}")
            )
        return runtime.invoke(event, source=source)

    def client(
        self, service: str, *, endpoint_url: str | None = None, config: Config = _CLIENT_CONFIG
    ) -> Any:
        endpoint = endpoint_url or (
            self.dynamodb.endpoint_url if service.startswith("dynamodb") else self.moto.endpoint_url
        )
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=endpoint,
            region_name=self.options.region,
            aws_access_key_id=FAKE_KEY,
            aws_secret_access_key=FAKE_KEY,
            config=config,
        )

    @property
    def functions(self) -> list[FunctionSpec]:
        return self.template.functions()

    # -- steps -----------------------------------------------------------------------------------

    def _start_emulators(self) -> None:
        self.moto.spawn()  # boots while DynamoDB Local's JVM does
        self.dynamodb.start()
        try:
            self.moto.wait_ready()
        except MotoError:
            self.moto.stop()
            self.moto.start()
        _log.info("DynamoDB Local on %s (pid %s)", self.dynamodb.endpoint_url, self.dynamodb.pid)
        _log.info("moto on %s (pid %s)", self.moto.endpoint_url, self.moto.pid)

    def _start_klarna(self) -> None:
        options = self.options
        if options.klarna_url:
            self._klarna_url = options.klarna_url.rstrip("/")
            _log.info("Klarna: %s (not the simulator)", self._klarna_url)
        else:
            config = replace(
                options.simulator, username=options.klarna_username, password=options.klarna_password
            )
            self.simulator = KlarnaSimulator(config).start()
            self._klarna_url = self.simulator.url
        if KLARNA_SECRET_PARAMETER in self.template.parameters:
            self._klarna_secret_arn = self.resources.create_klarna_secret(
                options.klarna_username, options.klarna_password
            )

    def _provision(self) -> None:
        self.resources.drop_resources_whose_condition_is_false(self._resolver())
        self.resources.name_resources(self._resolver(), moto_url=self.moto.endpoint_url)
        self.resources.create(self._resolver())

    def _start_fault_proxies(self) -> None:
        self._function_dynamodb_url = self.dynamodb.endpoint_url
        self._function_aws_url = self.moto.endpoint_url
        faults = self.options.aws_faults
        if not faults.active:
            return
        dynamodb = FaultProxy(self.dynamodb.endpoint_url, faults, name="dynamodb").start()
        moto = FaultProxy(self.moto.endpoint_url, faults, name="moto").start()
        self.proxies = [dynamodb, moto]
        self._function_dynamodb_url, self._function_aws_url = dynamodb.url, moto.url
        _log.info(
            "AWS faults on the functions' calls: DynamoDB throttled %.0f%%, PutEvents entries failed %.0f%%",
            faults.dynamodb_throttle_rate * 100,
            faults.put_events_failure_rate * 100,
        )

    def _start_gateway(self) -> None:
        self._apis = event_sources.api_routes(self.template, self.functions, self._resolver())
        options = self.options
        self.gateway = Gateway(
            self._apis.routes,
            lambda function, event: self.invoke(function, event, source="gateway"),
            port=options.port,
            region=options.region,
            account=options.account,
        )
        self.gateway.start()

    def _start_functions(self) -> None:
        context = FunctionContext(
            template=self.template,
            options=self.options,
            resolver=self._resolver(),
            aws_endpoint_url=self._function_aws_url,
            dynamodb_endpoint_url=self._function_dynamodb_url,
            localize=self._local_urls,
            with_api_url=self._with_api_url,
        )
        configs = [function_config(spec, context) for spec in self.functions]
        self.metrics = CloudWatchMetrics(self.client("cloudwatch")).start()
        self.runtimes = {
            config.logical_id: FunctionRuntime(
                config, processes=self.processes, on_log_line=self.metrics.line
            )
            for config in configs
        }
        # Cold starts in parallel: each is a Python process importing boto3 and Powertools.
        with ThreadPoolExecutor(max_workers=max(1, len(self.runtimes))) as pool:
            list(pool.map(lambda runtime: runtime.start(), self.runtimes.values()))
        event_sources.warn_of_events_not_emulated(self.functions)

    def _start_event_sources(self) -> None:
        resolver = self._resolver()
        streams = self.client("dynamodbstreams", config=_STREAMS_CONFIG)
        self.pumps = event_sources.stream_pumps(
            self.functions,
            self.runtimes,
            resolver,
            streams=streams,
            send_to_queue=self.resources.send_to_queue,
            options=self.options,
        )
        schedules = event_sources.schedules(self.functions, resolver)
        self.scheduler = event_sources.scheduler(
            schedules, lambda function, event: self.invoke(function, event, source="schedule"), self.options
        )
        for source in self._event_sources():
            source.start()

    def _ready_values(self) -> dict[str, Any]:
        values = {
            "api_url": self._api_url(),
            "aws_endpoint_url": self.moto.endpoint_url,
            "dynamodb_endpoint_url": self.dynamodb.endpoint_url,
            "table_name": self.resources.first_ref(TABLE_TYPE),
            "event_bus_name": self.resources.first_ref(BUS_TYPE),
            "events_queue_url": self.resources.events_queue_url,
            "klarna_url": self._klarna_url,
            "region": self.options.region,
            "outputs": self._outputs(),
        }
        return {key: values[key] for key in READY_KEYS}

    def _outputs(self) -> dict[str, str]:
        """The template's Outputs with their local values, as `DescribeStacks` gives a deployed stack's
        (what the recovery CLI reads); an output that names something the stack does not run is left out."""
        resolver = self._resolver()
        outputs = {}
        for name, output in (self.template.document.get("Outputs") or {}).items():
            if "Condition" in output and not resolver.condition(str(output["Condition"])):
                continue
            try:
                value = resolver.resolve(output["Value"])
            except (TemplateError, KeyError) as error:
                _log.debug("output %s has no local value: %s", name, error)
                continue
            outputs[name] = self._local_urls(as_string(value))
        return outputs

    # -- values ----------------------------------------------------------------------------------

    def _resolver(self) -> Resolver:
        """Intrinsic functions resolved with what the stack knows by now (the API's URL once it listens)."""
        options = self.options
        parameters = {name: self._with_api_url(value) for name, value in options.parameters.items()}
        parameters.setdefault(KLARNA_URL_PARAMETER, self._klarna_url)
        if self._klarna_secret_arn:
            parameters.setdefault(KLARNA_SECRET_PARAMETER, self._klarna_secret_arn)
        api_url = self._api_url()
        if api_url and CALLBACK_BASE_URL_PARAMETER in self.template.parameters:
            parameters.setdefault(CALLBACK_BASE_URL_PARAMETER, api_url)
        pseudo = {
            "AWS::Region": options.region,
            "AWS::AccountId": options.account,
            "AWS::StackName": options.stack_name,
            "AWS::StackId": options.arn("cloudformation", f"stack/{options.stack_name}/local"),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        return Resolver(self.template, parameters=parameters, pseudo=pseudo, values=self.values)

    def _api_url(self) -> str | None:
        if self.gateway is None:
            return None
        return self._apis.url(self.template, self.gateway.stage_url)

    def _with_api_url(self, value: str) -> str:
        api_url = self._api_url()
        return value.replace(API_URL_PLACEHOLDER, api_url) if api_url else value

    def _local_urls(self, value: str) -> str:
        """The API's AWS URL (https://{api}.execute-api...) becomes the local gateway's."""
        assert self.gateway is not None  # noqa: S101 - started before the functions
        for api_id in {self.values.refs[i] for i in self.template.api_ids()}:
            value = re.sub(
                rf"https://{api_id}\.execute-api\.[a-z0-9-]+\.amazonaws\.com", self.gateway.url, value
            )
        return value
