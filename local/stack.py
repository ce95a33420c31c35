"""The local stack: the whole application on 127.0.0.1, driven by template.yaml (`python -m local.stack`).

Starts DynamoDB Local (every table of the template, streams, indexes and TTL as defined), moto's server
(every event bus, archive, rule and queue of the template, the Klarna credentials secret, and an
`events_queue` subscribed to every event on the bus), the Klarna simulator (unless `--klarna-url`), every
function of the template in its own warm process with its template environment, and what invokes them on
AWS: the API gateway for `Api` events, the stream pump for `DynamoDB` events, the scheduler for `Schedule` /
`ScheduleV2` events. Prints one JSON line when ready; stops everything it started on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from local.cli import key_value, seconds_range
from local.dynamodb_local import DynamoDBLocal
from local.fault_proxy import AWS_FAULT_PROFILES, AwsFaults, FaultProxy
from local.gateway import Gateway, Route
from local.klarna_simulator import KlarnaSimulator, SimulatorConfig
from local.klarna_simulator.chaos import CHAOS_PROFILES, chaos_profile
from local.lifecycle import Startable
from local.logs import configure_logging
from local.moto_process import MotoError, MotoProcess
from local.runtime import FunctionConfig, FunctionRuntime, InvokeResult, lambda_error
from local.sam import (
    API_TYPE,
    ARCHIVE_TYPE,
    BUS_TYPE,
    FUNCTION_TYPE,
    IMPLICIT_API,
    LAYER_TYPE,
    LOG_GROUP_TYPE,
    QUEUE_TYPE,
    RULE_TYPE,
    SECRET_TYPE,
    TABLE_TYPE,
    FunctionSpec,
    LocalValues,
    Resolver,
    Template,
    environment_strings,
)
from local.scheduler import Scheduler, ScheduleSpec, rate_seconds
from local.stream_mapping import StreamMapping
from local.stream_pump import StreamPump
from local.template import TEMPLATE_PATH, TemplateError, create_table

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_log = logging.getLogger("local.stack")

# The template's contract with the stack: these parameters get the local Klarna's URL and secret.
KLARNA_URL_PARAMETER = "KlarnaApiUrl"
KLARNA_SECRET_PARAMETER = "KlarnaCredentialsSecretArn"
# ... and this one the local API's URL: the sessions API builds Klarna's status_update URLs on it (on AWS
# they come from the request's execute-api domain, which the local gateway does not have).
CALLBACK_BASE_URL_PARAMETER = "CallbackBaseUrl"
# In --param and --env values, replaced by the local API's URL (stage included) once the gateway listens.
API_URL_PLACEHOLDER = "{api_url}"
FAKE_KEY = "local"  # the emulators accept any credentials
_CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=30, retries={"mode": "standard", "total_max_attempts": 3}
)
# Resource type -> (the property naming it, the local name when it has none, the service's length limit).
_NAMING = {
    TABLE_TYPE: ("TableName", "{stack}-{id}", 255),
    QUEUE_TYPE: ("QueueName", "{stack}-{id}", 80),
    BUS_TYPE: ("Name", "{stack}-{id}", 256),
    ARCHIVE_TYPE: ("ArchiveName", "{stack}-{id}", 48),
    RULE_TYPE: ("Name", "{stack}-{id}", 64),
    SECRET_TYPE: ("Name", "{stack}/{id}", 512),
    FUNCTION_TYPE: ("FunctionName", "{stack}-{id}", 64),
    LOG_GROUP_TYPE: ("LogGroupName", "/aws/local/{stack}/{id}", 512),
}
READY_KEYS = (
    "api_url",
    "aws_endpoint_url",
    "dynamodb_endpoint_url",
    "table_name",
    "event_bus_name",
    "events_queue_url",
    "klarna_url",
)


@dataclass
class StackOptions:
    template: Path = TEMPLATE_PATH
    port: int = 3000
    klarna_url: str | None = None  # another Klarna instead of the simulator
    klarna_username: str = SimulatorConfig.username
    klarna_password: str = SimulatorConfig.password
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    poll_interval: float = 10.0
    parameters: dict[str, str] = field(default_factory=dict)  # template parameter overrides
    environment: dict[str, str] = field(default_factory=dict)  # extra variables for every function
    concurrency: int = 2  # warm instances per function, at most
    aws_faults: AwsFaults = field(default_factory=AwsFaults)
    stack_name: str = "hpp-tracker-local"
    region: str = "eu-west-1"
    account: str = "123456789012"  # moto's default account
    pump_poll_interval: float = 0.25
    pump_retry_delay: float = 0.2


class LocalStack(Startable):
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.template = Template.load(self.options.template)
        self.dynamodb = DynamoDBLocal()
        self.moto = MotoProcess()
        self.simulator: KlarnaSimulator | None = None
        self.proxies: list[FaultProxy] = []
        self.gateway: Gateway | None = None
        self.runtimes: dict[str, FunctionRuntime] = {}
        self.pumps: list[StreamPump] = []
        self.scheduler: Scheduler | None = None
        self.values = LocalValues()
        self.ready: dict[str, Any] = {}
        self._functions = {spec.logical_id: spec for spec in self.template.functions()}
        self._queue_urls: dict[str, str] = {}  # queue ARN -> URL
        self._events_queue_url: str | None = None
        self._klarna_url = ""
        self._klarna_secret_arn: str | None = None
        self._function_dynamodb_url = ""
        self._function_aws_url = ""
        self._api_stages: dict[str, str] = {}  # API logical id -> stage
        self._stopped = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start everything (from the main thread: the emulators die with the thread that starts them)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self.ready

    def _start(self) -> None:
        options = self.options
        self.moto.spawn()  # boots while DynamoDB Local's JVM does
        self.dynamodb.start()
        try:
            self.moto.wait_ready()
        except MotoError:
            self.moto.stop()
            self.moto.start()
        _log.info("DynamoDB Local on %s (pid %s)", self.dynamodb.endpoint_url, self.dynamodb.pid)
        _log.info("moto on %s (pid %s)", self.moto.endpoint_url, self.moto.pid)
        self._start_klarna()
        self._drop_resources_whose_condition_is_false()
        self._name_resources()
        self._create_tables()
        self._create_aws_resources()
        self._start_fault_proxies()
        self.gateway = Gateway(
            self._routes(),
            self._invoke_from_gateway,
            port=options.port,
            region=options.region,
            account=options.account,
        )
        self.gateway.start()
        self._start_functions()
        self._start_pumps()
        self._start_scheduler()
        self.ready = {
            "api_url": self._api_url(),
            "aws_endpoint_url": self.moto.endpoint_url,
            "dynamodb_endpoint_url": self.dynamodb.endpoint_url,
            "table_name": self._first_ref(TABLE_TYPE),
            "event_bus_name": self._first_ref(BUS_TYPE),
            "events_queue_url": self._events_queue_url,
            "klarna_url": self._klarna_url,
        }

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        _log.info("stopping")
        steps: list[Callable[[], None]] = []
        if self.scheduler is not None:
            steps.append(self.scheduler.stop)
        steps += [pump.stop for pump in self.pumps]
        if self.gateway is not None:
            steps.append(self.gateway.stop)
        if self.simulator is not None:
            steps.append(self.simulator.stop)
        steps += [runtime.stop for runtime in self.runtimes.values()]
        steps += [proxy.stop for proxy in self.proxies]
        steps += [self.moto.stop, self.dynamodb.stop]
        for step in steps:
            try:
                step()
            except Exception:
                _log.exception("while stopping")
        _log.info("stopped")

    def child_pids(self) -> list[int]:
        """Every process the stack started (emulators and function instances)."""
        pids = [self.dynamodb.pid, self.moto.pid]
        for runtime in self.runtimes.values():
            pids += runtime.pids
        return [pid for pid in pids if pid is not None]

    def healthy(self) -> str | None:
        """None while the emulators run; otherwise which one stopped."""
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

    # -- AWS clients -----------------------------------------------------------------------------

    def client(self, service: str, *, endpoint_url: str | None = None) -> Any:
        endpoint = endpoint_url or (
            self.dynamodb.endpoint_url if service.startswith("dynamodb") else self.moto.endpoint_url
        )
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=endpoint,
            region_name=self.options.region,
            aws_access_key_id=FAKE_KEY,
            aws_secret_access_key=FAKE_KEY,
            config=_CLIENT_CONFIG,
        )

    # -- resources -------------------------------------------------------------------------------

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.options.region}:{self.options.account}:{resource}"

    def _drop_resources_whose_condition_is_false(self) -> None:
        """A resource with `Condition: X` exists only when X holds (with the local parameter values)."""
        resolver = self._resolver()
        dropped = [
            logical_id
            for logical_id, resource in self.template.resources.items()
            if "Condition" in resource and not resolver.condition(str(resource["Condition"]))
        ]
        for logical_id in dropped:
            del self.template.resources[logical_id]
        if dropped:
            _log.info("left out (their Condition is false): %s", ", ".join(sorted(dropped)))
            self._functions = {spec.logical_id: spec for spec in self.template.functions()}

    def _name_resources(self) -> None:
        """Give every resource its local name and ARN before anything is created, so any can refer to any."""
        resolver = self._resolver()
        for logical_id, resource in self.template.resources.items():
            kind = resource.get("Type", "")
            props = resource.get("Properties") or {}
            name = None
            if kind in _NAMING:
                name_property, pattern, limit = _NAMING[kind]
                default = pattern.format(stack=self.options.stack_name, id=logical_id)
                if kind == QUEUE_TYPE and props.get("FifoQueue"):
                    default += ".fifo"
                name = (
                    str(resolver.resolve(props[name_property]))[:limit] if name_property in props else default
                )
            identity = self._local_identity(kind, logical_id, name)
            if identity is None:
                self.values.placeholders.add(logical_id)
                identity = (
                    f"{self.options.stack_name}-{logical_id}",
                    {"Arn": self._arn("local", logical_id)},
                )
            self.values.refs[logical_id], self.values.attributes[logical_id] = identity
        if self._uses_implicit_api():
            self.values.refs[IMPLICIT_API] = _api_id(IMPLICIT_API)
        if self.values.placeholders:
            _log.info(
                "not emulated locally (references resolve to placeholders): %s",
                ", ".join(
                    sorted(f"{i} ({self.template.resources[i]['Type']})" for i in self.values.placeholders)
                ),
            )

    def _local_identity(
        self, kind: str, logical_id: str, name: str | None
    ) -> tuple[str, dict[str, str]] | None:
        """A resource's `!Ref` value and `!GetAtt` attributes locally; None for types not emulated."""
        arn = self._arn
        identities: dict[str, Callable[[str], tuple[str, dict[str, str]]]] = {
            TABLE_TYPE: lambda n: (n, {"Arn": arn("dynamodb", f"table/{n}")}),
            QUEUE_TYPE: lambda n: (
                f"{self.moto.endpoint_url}/{self.options.account}/{n}",
                {
                    "Arn": arn("sqs", n),
                    "QueueName": n,
                    "QueueUrl": f"{self.moto.endpoint_url}/{self.options.account}/{n}",
                },
            ),
            BUS_TYPE: lambda n: (n, {"Arn": arn("events", f"event-bus/{n}"), "Name": n}),
            ARCHIVE_TYPE: lambda n: (n, {"Arn": arn("events", f"archive/{n}")}),
            RULE_TYPE: lambda n: (n, {"Arn": arn("events", f"rule/{n}")}),
            SECRET_TYPE: lambda n: (
                arn("secretsmanager", f"secret:{n}"),
                {"Id": arn("secretsmanager", f"secret:{n}")},
            ),
            FUNCTION_TYPE: lambda n: (n, {"Arn": arn("lambda", f"function:{n}")}),
            LOG_GROUP_TYPE: lambda n: (n, {"Arn": arn("logs", f"log-group:{n}:*")}),
        }
        if kind in identities and name is not None:
            return identities[kind](name)
        if kind == LAYER_TYPE:
            return arn("lambda", f"layer:{self.options.stack_name}-{logical_id}:1"), {}
        if kind == API_TYPE:
            return _api_id(logical_id), {"RootResourceId": "root"}
        return None

    def _resolver(self) -> Resolver:
        options = self.options
        parameters = {name: self._with_api_url(value) for name, value in options.parameters.items()}
        parameters.setdefault(KLARNA_URL_PARAMETER, self._klarna_url)
        if self._klarna_secret_arn:
            parameters.setdefault(KLARNA_SECRET_PARAMETER, self._klarna_secret_arn)
        api_url = self._api_url()
        if api_url and CALLBACK_BASE_URL_PARAMETER in (self.template.document.get("Parameters") or {}):
            parameters.setdefault(CALLBACK_BASE_URL_PARAMETER, api_url)
        pseudo = {
            "AWS::Region": options.region,
            "AWS::AccountId": options.account,
            "AWS::StackName": options.stack_name,
            "AWS::StackId": self._arn("cloudformation", f"stack/{options.stack_name}/local"),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        return Resolver(self.template, parameters=parameters, pseudo=pseudo, values=self.values)

    def _create_tables(self) -> None:
        client = self.client("dynamodb")
        for logical_id in self.template.of_type(TABLE_TYPE):
            name = self.values.refs[logical_id]
            definition = create_table(client, logical_id, name, template=self.template.document)
            table = client.describe_table(TableName=name)["Table"]
            if table.get("LatestStreamArn"):
                self.values.attributes[logical_id]["StreamArn"] = table["LatestStreamArn"]
            indexes = [index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])]
            _log.info(
                "table %s (%s)%s%s%s",
                name,
                logical_id,
                f", stream {table['StreamSpecification']['StreamViewType']}"
                if table.get("StreamSpecification")
                else "",
                f", indexes {', '.join(indexes)}" if indexes else "",
                f", TTL on {definition.ttl_attribute}" if definition.ttl_attribute else "",
            )

    def _create_aws_resources(self) -> None:
        resolver = self._resolver()
        sqs = self.client("sqs")
        for logical_id in self.template.of_type(QUEUE_TYPE):
            self._create_queue(sqs, logical_id, resolver.resolve(self.template.properties(logical_id)))
        events = self.client("events")
        for logical_id in self.template.of_type(BUS_TYPE):
            events.create_event_bus(Name=self.values.refs[logical_id])
            _log.info("event bus %s (%s)", self.values.refs[logical_id], logical_id)
        for logical_id in self.template.of_type(ARCHIVE_TYPE):
            self._create_archive(events, logical_id, resolver.resolve(self.template.properties(logical_id)))
        for logical_id in self.template.of_type(RULE_TYPE):
            self._create_rule(events, logical_id, resolver.resolve(self.template.properties(logical_id)))
        secrets = self.client("secretsmanager")
        for logical_id in self.template.of_type(SECRET_TYPE):
            props = resolver.resolve(self.template.properties(logical_id))
            name = self.values.refs[logical_id].split(":secret:", 1)[1]
            arn = secrets.create_secret(Name=name, SecretString=str(props.get("SecretString") or "{}"))["ARN"]
            self.values.refs[logical_id] = self.values.attributes[logical_id]["Id"] = arn
        self._create_events_queue(sqs, events)

    def _create_queue(self, sqs: SQSClient, logical_id: str, props: dict[str, Any]) -> None:
        name = self.values.attributes[logical_id]["QueueName"]
        # CreateQueue takes these properties as attributes, as strings (a RedrivePolicy as JSON).
        attributes = {
            key: _attribute_value(value) for key, value in props.items() if key in _QUEUE_ATTRIBUTES
        }
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
        self.values.refs[logical_id] = self.values.attributes[logical_id]["QueueUrl"] = url
        self._queue_urls[self.values.attributes[logical_id]["Arn"]] = url
        _log.info("queue %s (%s)", name, logical_id)

    def _create_archive(self, events: Any, logical_id: str, props: dict[str, Any]) -> None:
        arguments: dict[str, Any] = {
            "ArchiveName": self.values.refs[logical_id],
            "EventSourceArn": props["SourceArn"],
        }
        if props.get("EventPattern"):
            arguments["EventPattern"] = json.dumps(props["EventPattern"])
        if props.get("RetentionDays") is not None:
            arguments["RetentionDays"] = int(props["RetentionDays"])
        events.create_archive(**arguments)
        _log.info("archive %s (%s)", arguments["ArchiveName"], logical_id)

    def _create_rule(self, events: Any, logical_id: str, props: dict[str, Any]) -> None:
        name = self.values.refs[logical_id]
        arguments: dict[str, Any] = {"Name": name, "State": props.get("State", "ENABLED")}
        if props.get("EventBusName"):
            arguments["EventBusName"] = str(props["EventBusName"]).rsplit("/", 1)[-1]
        if props.get("EventPattern"):
            pattern = props["EventPattern"]
            arguments["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
        if props.get("ScheduleExpression"):
            arguments["ScheduleExpression"] = props["ScheduleExpression"]
        events.put_rule(**arguments)
        targets = [t for t in props.get("Targets") or [] if str(t.get("Arn", "")).startswith("arn:aws:sqs:")]
        skipped = len(props.get("Targets") or []) - len(targets)
        if targets:
            events.put_targets(
                Rule=name,
                EventBusName=arguments.get("EventBusName", "default"),
                Targets=[{"Id": str(t.get("Id", i)), "Arn": t["Arn"]} for i, t in enumerate(targets)],
            )
        _log.info(
            "rule %s (%s)%s",
            name,
            logical_id,
            f"; {skipped} non-SQS target(s) not emulated" if skipped else "",
        )

    def _create_events_queue(self, sqs: SQSClient, events: Any) -> None:
        """A queue that receives every event put on the template's bus(es): to watch what is published."""
        buses = [self.values.refs[logical_id] for logical_id in self.template.of_type(BUS_TYPE)]
        if not buses:
            return
        name = f"{self.options.stack_name}-events"
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self._arn("sqs", name)
        for bus in buses:
            rule = f"{self.options.stack_name}-all-events"
            events.put_rule(
                Name=rule, EventBusName=bus, EventPattern=json.dumps({"account": [self.options.account]})
            )
            events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "events-queue", "Arn": arn}])
        self._events_queue_url = url
        _log.info("events queue %s ← every event on %s", name, ", ".join(buses))

    # -- Klarna ----------------------------------------------------------------------------------

    def _start_klarna(self) -> None:
        options = self.options
        username, password = options.klarna_username, options.klarna_password
        if options.klarna_url:
            self._klarna_url = options.klarna_url.rstrip("/")
            _log.info("Klarna: %s (not the simulator)", self._klarna_url)
        else:
            config = replace(options.simulator, username=username, password=password)
            self.simulator = KlarnaSimulator(config).start()
            self._klarna_url = self.simulator.url
        if KLARNA_SECRET_PARAMETER in (self.template.document.get("Parameters") or {}):
            secret = self.client("secretsmanager").create_secret(
                Name=f"{options.stack_name}/klarna",
                SecretString=json.dumps({"username": username, "password": password}),
            )
            self._klarna_secret_arn = secret["ARN"]
            _log.info("Klarna credentials in secret %s", secret["Name"])

    # -- fault injection -------------------------------------------------------------------------

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

    # -- functions -------------------------------------------------------------------------------

    def _function_config(self, spec: FunctionSpec, resolver: Resolver) -> FunctionConfig:
        options = self.options
        props = spec.properties
        name = self.values.refs[spec.logical_id]
        code_uri = props.get("CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError(f"{spec.logical_id}: CodeUri must be a local path to run it locally")
        layers = []
        for layer in resolver.resolve([_layer_ref(item) for item in props.get("Layers") or []]):
            if layer in self.template.of_type(LAYER_TYPE):
                layers.append(str(self.template.layer_path(layer)))
            else:
                _log.info(
                    "%s: layer %s is not in the template; not on the path locally", spec.logical_id, layer
                )
        code_dir = self.template.root / code_uri
        variables = environment_strings(
            resolver.resolve((props.get("Environment") or {}).get("Variables") or {})
        )
        variables = {key: self._local_urls(value) for key, value in variables.items()}
        logging_config = resolver.resolve(props.get("LoggingConfig") or {})
        environment = {
            # What the Lambda runtime sets.
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "AWS_REGION": options.region,
            "AWS_DEFAULT_REGION": options.region,
            # Credentials of the function's role: fake, the emulators take any.
            "AWS_ACCESS_KEY_ID": FAKE_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_KEY,
            "AWS_SESSION_TOKEN": FAKE_KEY,
            # Never the developer's AWS: no profiles, no instance metadata, every endpoint local.
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
            "AWS_ENDPOINT_URL": self._function_aws_url,
            "AWS_ENDPOINT_URL_DYNAMODB": self._function_dynamodb_url,
            # No X-Ray daemon locally.
            "POWERTOOLS_TRACE_DISABLED": "true",
            "PYTHONPATH": ":".join([str(code_dir), *layers]),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if logging_config.get("ApplicationLogLevel"):
            environment["AWS_LAMBDA_LOG_LEVEL"] = str(logging_config["ApplicationLogLevel"])
        if logging_config.get("LogFormat"):
            environment["AWS_LAMBDA_LOG_FORMAT"] = str(logging_config["LogFormat"])
        environment.update(variables)
        environment.update({name: self._with_api_url(value) for name, value in options.environment.items()})
        reserved = props.get("ReservedConcurrentExecutions")
        concurrency = (
            options.concurrency if reserved is None else max(1, min(options.concurrency, int(reserved)))
        )
        return FunctionConfig(
            logical_id=spec.logical_id,
            function_name=name,
            arn=self.values.attributes[spec.logical_id]["Arn"],
            handler=spec.handler,
            code_dir=code_dir,
            environment=environment,
            timeout=spec.timeout,
            max_concurrency=concurrency,
            memory_size=spec.memory_size,
            log_group=str(logging_config.get("LogGroup") or ""),
            runtime=str(props.get("Runtime", "python3.13")),
        )

    def _local_urls(self, value: str) -> str:
        """The API's AWS URL (https://{api}.execute-api...) becomes the local gateway's."""
        assert self.gateway is not None  # noqa: S101 - started before the functions
        for api_id in {self.values.refs[i] for i in self._api_ids()}:
            value = re.sub(
                rf"https://{api_id}\.execute-api\.[a-z0-9-]+\.amazonaws\.com", self.gateway.url, value
            )
        return value

    def _start_functions(self) -> None:
        resolver = self._resolver()
        configs = [self._function_config(spec, resolver) for spec in self._functions.values()]
        self.runtimes = {config.logical_id: FunctionRuntime(config) for config in configs}
        # Cold starts in parallel: each is a Python process importing boto3 and Powertools.
        with ThreadPoolExecutor(max_workers=max(1, len(self.runtimes))) as pool:
            list(pool.map(lambda runtime: runtime.start(), self.runtimes.values()))
        for logical_id, spec in self._functions.items():
            handled = {"Api", "DynamoDB", "Schedule", "ScheduleV2"}
            for event in spec.events:
                if event.type not in handled:
                    _log.warning(
                        "%s: %s event %r is not emulated locally", logical_id, event.type, event.name
                    )

    def _invoke_from_gateway(self, function: str, event: dict[str, Any]) -> InvokeResult:
        return self.invoke(function, event, source="gateway")

    # -- API routes ------------------------------------------------------------------------------

    def _uses_implicit_api(self) -> bool:
        return any(
            "RestApiId" not in event.properties
            for spec in self._functions.values()
            for event in spec.events_of("Api")
        )

    def _api_ids(self) -> list[str]:
        ids = list(self.template.of_type(API_TYPE))
        return ids + ([IMPLICIT_API] if self._uses_implicit_api() else [])

    def _routes(self) -> list[Route]:
        resolver = self._resolver()
        routes = []
        self._api_stages = {}
        for logical_id, spec in self._functions.items():
            for event in spec.events_of("Api"):
                props = event.properties
                api = props.get("RestApiId")
                api_id = api["Ref"] if isinstance(api, dict) and "Ref" in api else str(api or IMPLICIT_API)
                api_props = (
                    resolver.resolve(self.template.properties(api_id)) if api_id != IMPLICIT_API else {}
                )
                default_auth = (api_props.get("Auth") or {}).get("DefaultAuthorizer", "NONE")
                self._api_stages[api_id] = str(api_props.get("StageName", "Prod"))
                authorization = ((props.get("Auth") or {}).get("Authorizer")) or default_auth
                routes.append(
                    Route(
                        stage=self._api_stages[api_id],
                        method=str(props.get("Method", "any")).upper(),
                        path=str(resolver.resolve(props["Path"])),
                        function=logical_id,
                        authorization=str(authorization),
                        api_id=self.values.refs[api_id],
                        binary_media_types=tuple(
                            str(t).replace("~1", "/") for t in api_props.get("BinaryMediaTypes") or []
                        ),
                    )
                )
        return routes

    def _with_api_url(self, value: str) -> str:
        api_url = self._api_url()
        return value.replace(API_URL_PLACEHOLDER, api_url) if api_url else value

    def _api_url(self) -> str | None:
        """The URL of the template's first API with routes (its stage included), like the ApiUrl output."""
        if self.gateway is None:
            return None
        for api_id in self._api_ids():
            if api_id in self._api_stages:
                return self.gateway.stage_url(self._api_stages[api_id])
        return None

    # -- event sources ---------------------------------------------------------------------------

    def _start_pumps(self) -> None:
        resolver = self._resolver()
        streams = self.client("dynamodbstreams")
        for logical_id, spec in self._functions.items():
            runtime = self.runtimes[logical_id]
            for event in spec.events_of("DynamoDB"):
                mapping = StreamMapping.from_event(logical_id, resolver.resolve(event.properties))
                pump = StreamPump(
                    mapping,
                    function_arn=runtime.config.arn,
                    streams=streams,
                    invoke=lambda records, runtime=runtime: runtime.invoke(records, source="stream"),  # type: ignore[misc]
                    send_to_queue=self._send_to_queue,
                    region=self.options.region,
                    poll_interval=self.options.pump_poll_interval,
                    retry_delay=self.options.pump_retry_delay,
                )
                pump.start()
                self.pumps.append(pump)

    def _send_to_queue(self, queue_arn: str, body: str) -> None:
        url = self._queue_urls.get(queue_arn)
        if url is None:
            raise TemplateError(f"no local queue with ARN {queue_arn}")
        self.client("sqs").send_message(QueueUrl=url, MessageBody=body)

    def _start_scheduler(self) -> None:
        resolver = self._resolver()
        schedules = []
        for logical_id, spec in self._functions.items():
            for event in spec.events_of("Schedule", "ScheduleV2"):
                props = resolver.resolve(event.properties)
                enabled = (
                    props.get("Enabled", True) is not False and props.get("State", "ENABLED") != "DISABLED"
                )
                expression = str(props.get("ScheduleExpression") or props.get("Schedule") or "")
                schedules.append(
                    ScheduleSpec(logical_id, event.name, event.type, expression, props.get("Input"), enabled)
                )
                if rate_seconds(expression) is None:
                    _log.info("%s: %s is run every --poll-interval seconds locally", logical_id, expression)
        if schedules:
            self.scheduler = Scheduler(
                schedules,
                lambda function, event: self.invoke(function, event, source="schedule"),
                interval=self.options.poll_interval,
                region=self.options.region,
                account=self.options.account,
            )
            self.scheduler.start()

    # -- helpers ---------------------------------------------------------------------------------

    def _first_ref(self, resource_type: str) -> str | None:
        ids = list(self.template.of_type(resource_type))
        return self.values.refs.get(ids[0]) if ids else None


_QUEUE_ATTRIBUTES = frozenset({
    "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout", "FifoQueue", "ContentBasedDeduplication", "RedrivePolicy",
})  # fmt: skip


def _attribute_value(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _layer_ref(item: Any) -> Any:
    """A layer reference as a logical id when it is `!Ref Layer` (its ARN otherwise)."""
    if isinstance(item, dict) and set(item) == {"Ref"}:
        return item["Ref"]
    return item


def _api_id(logical_id: str) -> str:
    """A REST API id the way AWS shapes them (10 lowercase characters), stable per logical id."""
    return hashlib.sha256(logical_id.encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    simulator = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m local.stack",
        description="The whole tracker on 127.0.0.1, from template.yaml: DynamoDB Local, moto, the "
        "functions, an API gateway, the stream pump, the scheduler and a Klarna simulator.",
    )
    parser.add_argument(
        "--port", type=int, default=3000, help="gateway port (0: any free port; default 3000)"
    )
    parser.add_argument(
        "--klarna-url", default=None, metavar="URL", help="use this Klarna instead of the simulator"
    )
    parser.add_argument("--klarna-username", default=simulator.username)
    parser.add_argument("--klarna-password", default=simulator.password)
    parser.add_argument(
        "--poll-interval", type=float, default=10.0, metavar="SECONDS", help="scheduled runs (default 10)"
    )
    parser.add_argument(
        "--param",
        type=key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter, e.g. LogLevel=DEBUG",
    )
    parser.add_argument(
        "--env",
        type=key_value,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for every function",
    )
    parser.add_argument(
        "--concurrency", type=int, default=2, help="warm instances per function, at most (default 2)"
    )
    parser.add_argument(
        "--aws-faults",
        choices=sorted(AWS_FAULT_PROFILES),
        default="none",
        help="faults on the functions' AWS calls (DynamoDB throttling, PutEvents entry failures)",
    )
    parser.add_argument(
        "--aws-fault-set",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one fault rate, e.g. dynamodb_throttle_rate=0.1 or put_events_failure_rate=0.3",
    )
    group = parser.add_argument_group("Klarna simulator")
    group.add_argument("--seed", type=int, default=simulator.seed)
    group.add_argument("--chaos", choices=sorted(CHAOS_PROFILES), default="none")
    group.add_argument("--chaos-set", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    group.add_argument("--journeys", choices=("auto", "manual"), default=simulator.journeys)
    group.add_argument(
        "--session-lifetime", type=float, default=simulator.session_lifetime, metavar="SECONDS"
    )
    group.add_argument("--think-time", type=seconds_range, default=simulator.think_time, metavar="MIN:MAX")
    group.add_argument(
        "--callback-retry-delay", type=float, default=simulator.callback_retry_delay, metavar="SECONDS"
    )
    parser.add_argument("--template", type=Path, default=TEMPLATE_PATH)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def options_from_args(args: argparse.Namespace) -> StackOptions:
    simulator = SimulatorConfig(
        seed=args.seed,
        chaos=chaos_profile(args.chaos, dict(args.chaos_set)),
        journeys=args.journeys,
        session_lifetime=args.session_lifetime,
        think_time=args.think_time,
        callback_retry_delay=args.callback_retry_delay,
    )
    return StackOptions(
        template=args.template,
        port=args.port,
        klarna_url=args.klarna_url,
        klarna_username=args.klarna_username,
        klarna_password=args.klarna_password,
        simulator=simulator,
        poll_interval=args.poll_interval,
        parameters=dict(args.param),
        environment=dict(args.env),
        concurrency=args.concurrency,
        aws_faults=replace(AWS_FAULT_PROFILES[args.aws_faults], seed=args.seed).with_overrides(
            dict(args.aws_fault_set)
        ),
    )


@contextlib.contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    configure_logging(args.log_level)
    with _stop_signals() as stop:
        stack = LocalStack(options)
        try:
            ready = stack.start()
        except (TemplateError, RuntimeError, OSError) as error:
            _log.error("the local stack did not start: %s", error)
            return 1
        try:
            print(json.dumps({key: ready.get(key) for key in READY_KEYS}), flush=True)
            _log.info("ready; Ctrl-C stops everything")
            while not stop.wait(1.0):
                problem = stack.healthy()
                if problem is not None:
                    _log.error("%s: stopping the stack", problem)
                    return 1
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
