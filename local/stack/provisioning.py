"""Provisioning: the template's resources created on the emulators under their local names.

Every resource first gets its local name and its `!Ref` / `!GetAtt` values (`LocalValues`), so that any
resource can refer to any other; then the tables (DynamoDB Local), queues, event buses, archives, rules
and secrets (moto) are created, plus what the stack adds: the Klarna credentials secret and an
`events_queue` that receives every event on the template's buses. Types the stack does not emulate
resolve to placeholders, and the log names them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from local.stack.options import StackOptions
from local.template import (
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
    LocalValues,
    Resolver,
    Template,
    TemplateError,
    as_string,
    create_table,
)

_log = logging.getLogger("local.stack")

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
# CreateQueue takes these properties as attributes, as strings (a RedrivePolicy as JSON).
_QUEUE_ATTRIBUTES = frozenset({
    "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout", "FifoQueue", "ContentBasedDeduplication", "RedrivePolicy",
})  # fmt: skip

type Identity = tuple[str, dict[str, str]]  # a resource's `!Ref` value and its `!GetAtt` attributes


class Provisioner:
    def __init__(
        self,
        template: Template,
        options: StackOptions,
        values: LocalValues,
        client: Callable[[str], Any],  # an AWS client of the emulators, by service name
    ) -> None:
        self.template = template
        self.options = options
        self.values = values
        self.events_queue_url: str | None = None
        self._client = client
        self._queue_urls: dict[str, str] = {}  # queue ARN -> URL

    def drop_resources_whose_condition_is_false(self, resolver: Resolver) -> None:
        """A resource with `Condition: X` exists only when X holds (with the local parameter values)."""
        dropped = [
            logical_id
            for logical_id, resource in self.template.resources.items()
            if "Condition" in resource and not resolver.condition(str(resource["Condition"]))
        ]
        for logical_id in dropped:
            del self.template.resources[logical_id]
        if dropped:
            _log.info("left out (their Condition is false): %s", ", ".join(sorted(dropped)))

    def name_resources(self, resolver: Resolver, *, moto_url: str) -> None:
        """Give every resource its local name and ARN before anything is created, so any can refer to any."""
        for logical_id, resource in self.template.resources.items():
            kind = resource.get("Type", "")
            name = self._local_name(kind, logical_id, resource.get("Properties") or {}, resolver)
            identity = self._identity(kind, logical_id, name, moto_url)
            if identity is None:
                self.values.placeholders.add(logical_id)
                identity = (
                    f"{self.options.stack_name}-{logical_id}",
                    {"Arn": self.options.arn("local", logical_id)},
                )
            self.values.refs[logical_id], self.values.attributes[logical_id] = identity
        if IMPLICIT_API in self.template.api_ids():
            self.values.refs[IMPLICIT_API] = _api_id(IMPLICIT_API)
        if self.values.placeholders:
            not_emulated = (f"{i} ({self.template.resources[i]['Type']})" for i in self.values.placeholders)
            _log.info(
                "not emulated locally (references resolve to placeholders): %s",
                ", ".join(sorted(not_emulated)),
            )

    def create(self, resolver: Resolver) -> None:
        """Create every table, queue, bus, archive, rule and secret, then the events queue."""
        self._create_tables()
        sqs, events, secrets = self._client("sqs"), self._client("events"), self._client("secretsmanager")
        for logical_id in self.template.of_type(QUEUE_TYPE):
            self._create_queue(sqs, logical_id, self._resolved_properties(logical_id, resolver))
        for logical_id in self.template.of_type(BUS_TYPE):
            events.create_event_bus(Name=self.values.refs[logical_id])
            _log.info("event bus %s (%s)", self.values.refs[logical_id], logical_id)
        for logical_id in self.template.of_type(ARCHIVE_TYPE):
            self._create_archive(events, logical_id, self._resolved_properties(logical_id, resolver))
        for logical_id in self.template.of_type(RULE_TYPE):
            self._create_rule(events, logical_id, self._resolved_properties(logical_id, resolver))
        for logical_id in self.template.of_type(SECRET_TYPE):
            self._create_secret(secrets, logical_id, self._resolved_properties(logical_id, resolver))
        self._create_events_queue(sqs, events)

    def create_klarna_secret(self, username: str, password: str) -> str:
        """The Klarna credentials as the template expects them in Secrets Manager; the secret's ARN."""
        secret = self._client("secretsmanager").create_secret(
            Name=f"{self.options.stack_name}/klarna",
            SecretString=json.dumps({"username": username, "password": password}),
        )
        _log.info("Klarna credentials in secret %s", secret["Name"])
        return str(secret["ARN"])

    def send_to_queue(self, queue_arn: str, body: str) -> None:
        url = self._queue_urls.get(queue_arn)
        if url is None:
            raise TemplateError(f"no local queue with ARN {queue_arn}")
        self._client("sqs").send_message(QueueUrl=url, MessageBody=body)

    def first_ref(self, resource_type: str) -> str | None:
        """The local `!Ref` value of the template's first resource of a type (None if it has none)."""
        ids = list(self.template.of_type(resource_type))
        return self.values.refs.get(ids[0]) if ids else None

    # -- names -----------------------------------------------------------------------------------

    def _local_name(
        self, kind: str, logical_id: str, props: dict[str, Any], resolver: Resolver
    ) -> str | None:
        """The resource's name: the one its naming property gives, else the stack's pattern for it."""
        if kind not in _NAMING:
            return None
        name_property, pattern, limit = _NAMING[kind]
        if name_property in props:
            return str(resolver.resolve(props[name_property]))[:limit]
        name = pattern.format(stack=self.options.stack_name, id=logical_id)
        return name + ".fifo" if kind == QUEUE_TYPE and props.get("FifoQueue") else name

    def _identity(self, kind: str, logical_id: str, name: str | None, moto_url: str) -> Identity | None:
        """A resource's `!Ref` value and `!GetAtt` attributes locally; None for types not emulated."""
        arn = self.options.arn
        queue_url = f"{moto_url}/{self.options.account}/{name}"
        identities: dict[str, Callable[[str], Identity]] = {
            TABLE_TYPE: lambda n: (n, {"Arn": arn("dynamodb", f"table/{n}")}),
            QUEUE_TYPE: lambda n: (queue_url, {"Arn": arn("sqs", n), "QueueName": n, "QueueUrl": queue_url}),
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

    # -- resources -------------------------------------------------------------------------------

    def _resolved_properties(self, logical_id: str, resolver: Resolver) -> dict[str, Any]:
        properties: dict[str, Any] = resolver.resolve(self.template.properties(logical_id))
        return properties

    def _create_tables(self) -> None:
        client = self._client("dynamodb")
        for logical_id in self.template.of_type(TABLE_TYPE):
            name = self.values.refs[logical_id]
            definition = create_table(client, logical_id, name, template=self.template)
            table = client.describe_table(TableName=name)["Table"]
            if table.get("LatestStreamArn"):
                self.values.attributes[logical_id]["StreamArn"] = table["LatestStreamArn"]
            stream = table.get("StreamSpecification")
            indexes = [index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])]
            _log.info(
                "table %s (%s)%s%s%s",
                name,
                logical_id,
                f", stream {stream['StreamViewType']}" if stream else "",
                f", indexes {', '.join(indexes)}" if indexes else "",
                f", TTL on {definition.ttl_attribute}" if definition.ttl_attribute else "",
            )

    def _create_queue(self, sqs: Any, logical_id: str, props: dict[str, Any]) -> None:
        name = self.values.attributes[logical_id]["QueueName"]
        attributes = {key: _attribute(value) for key, value in props.items() if key in _QUEUE_ATTRIBUTES}
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
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
        rule = _rule_arguments(self.values.refs[logical_id], props)
        events.put_rule(**rule)
        targets = [t for t in props.get("Targets") or [] if str(t.get("Arn", "")).startswith("arn:aws:sqs:")]
        if targets:
            events.put_targets(
                Rule=rule["Name"],
                EventBusName=rule.get("EventBusName", "default"),
                Targets=[{"Id": str(t.get("Id", i)), "Arn": t["Arn"]} for i, t in enumerate(targets)],
            )
        skipped = len(props.get("Targets") or []) - len(targets)
        not_emulated = f"; {skipped} non-SQS target(s) not emulated" if skipped else ""
        _log.info("rule %s (%s)%s", rule["Name"], logical_id, not_emulated)

    def _create_secret(self, secrets: Any, logical_id: str, props: dict[str, Any]) -> None:
        name = self.values.refs[logical_id].split(":secret:", 1)[1]
        arn = secrets.create_secret(Name=name, SecretString=str(props.get("SecretString") or "{}"))["ARN"]
        self.values.refs[logical_id] = self.values.attributes[logical_id]["Id"] = arn

    def _create_events_queue(self, sqs: Any, events: Any) -> None:
        """A queue that receives every event put on the template's bus(es): to watch what is published."""
        buses = [self.values.refs[logical_id] for logical_id in self.template.of_type(BUS_TYPE)]
        if not buses:
            return
        name = f"{self.options.stack_name}-events"
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.options.arn("sqs", name)
        rule = f"{self.options.stack_name}-all-events"
        every_event = json.dumps({"account": [self.options.account]})
        for bus in buses:
            events.put_rule(Name=rule, EventBusName=bus, EventPattern=every_event)
            events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "events-queue", "Arn": arn}])
        self.events_queue_url = url
        _log.info("events queue %s ← every event on %s", name, ", ".join(buses))


def _rule_arguments(name: str, props: dict[str, Any]) -> dict[str, Any]:
    """PutRule's arguments for an AWS::Events::Rule's resolved properties."""
    arguments: dict[str, Any] = {"Name": name, "State": props.get("State", "ENABLED")}
    if props.get("EventBusName"):
        arguments["EventBusName"] = str(props["EventBusName"]).rsplit("/", 1)[-1]  # a name or an ARN
    pattern = props.get("EventPattern")
    if pattern:
        arguments["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
    if props.get("ScheduleExpression"):
        arguments["ScheduleExpression"] = props["ScheduleExpression"]
    return arguments


def _attribute(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict) else as_string(value)


def _api_id(logical_id: str) -> str:
    """A REST API id the way AWS shapes them (10 lowercase characters), stable per logical id."""
    return hashlib.sha256(logical_id.encode()).hexdigest()[:10]
