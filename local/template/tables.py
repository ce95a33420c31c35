"""The template's DynamoDB tables created locally, exactly as CloudFormation would define them.

The local stack and the tests build their tables from the template instead of repeating its key schema,
indexes and stream settings, so a change to the template is what runs locally and what the tests exercise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from local.template.reader import TABLE_TYPE, Template, TemplateError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Properties of AWS::DynamoDB::Table that CreateTable takes as they are. The rest are either
# CloudFormation-only (PointInTimeRecoverySpecification, SSESpecification, Tags,
# DeletionProtectionEnabled, ContributorInsightsSpecification, ...) or converted below.
_TABLE_KEYS = ("AttributeDefinitions", "KeySchema")
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection")
_DEFAULT_THROUGHPUT = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}


@dataclass(frozen=True)
class TableDefinition:
    """What CreateTable needs (without TableName, which the caller picks) plus the TTL attribute."""

    create_table_kwargs: dict[str, Any] = field(default_factory=dict)
    ttl_attribute: str | None = None


def table_definition(logical_id: str, template: Template | None = None) -> TableDefinition:
    """CreateTable arguments for the table resource ``logical_id`` of template.yaml (or ``template``)."""
    template = Template.load() if template is None else template
    props: dict[str, Any] = template.resource(logical_id, TABLE_TYPE).get("Properties") or {}
    kwargs = _create_table_arguments(props)
    _reject_intrinsics(kwargs, logical_id)
    return TableDefinition(create_table_kwargs=kwargs, ttl_attribute=_ttl_attribute(logical_id, props))


def create_table(
    client: DynamoDBClient,
    logical_id: str,
    table_name: str,
    *,
    template: Template | None = None,
    timeout: float = 30.0,
) -> TableDefinition:
    """Create ``logical_id``'s table as ``table_name``, wait until it is ACTIVE, and enable its TTL."""
    definition = table_definition(logical_id, template)
    client.create_table(TableName=table_name, **definition.create_table_kwargs)
    _wait_until_active(client, table_name, timeout)
    if definition.ttl_attribute is not None:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"AttributeName": definition.ttl_attribute, "Enabled": True},
        )
    return definition


def _create_table_arguments(props: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {key: props[key] for key in _TABLE_KEYS if key in props}
    billing_mode = props.get("BillingMode", "PROVISIONED")  # CloudFormation's default
    provisioned = billing_mode == "PROVISIONED"
    kwargs["BillingMode"] = billing_mode
    if provisioned:
        kwargs["ProvisionedThroughput"] = props.get("ProvisionedThroughput", _DEFAULT_THROUGHPUT)
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            # Only a global index has throughput of its own; a local one shares the table's.
            throughput = provisioned and key == "GlobalSecondaryIndexes"
            kwargs[key] = [_index(index, with_throughput=throughput) for index in props[key]]
    # CloudFormation enables the stream by naming a view type; CreateTable wants both.
    stream = props.get("StreamSpecification")
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    return kwargs


def _index(index: dict[str, Any], *, with_throughput: bool) -> dict[str, Any]:
    converted = {key: index[key] for key in _INDEX_KEYS if key in index}
    if with_throughput:
        converted["ProvisionedThroughput"] = index.get("ProvisionedThroughput", _DEFAULT_THROUGHPUT)
    return converted


def _ttl_attribute(logical_id: str, props: dict[str, Any]) -> str | None:
    ttl = props.get("TimeToLiveSpecification") or {}
    if ttl.get("Enabled", False) is False:
        return None
    attribute = ttl.get("AttributeName")
    if attribute is not None and not isinstance(attribute, str):
        raise TemplateError(f"{logical_id}: TimeToLiveSpecification.AttributeName must be a literal string")
    return attribute


def _reject_intrinsics(value: Any, logical_id: str) -> None:
    """Fail clearly on !Ref/!If/... where CreateTable needs a literal (nothing resolves them here)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" or key.startswith("Fn::"):
                raise TemplateError(f"{logical_id}: cannot resolve {{{key}: {item!r}}} locally")
            _reject_intrinsics(item, logical_id)
    elif isinstance(value, list):
        for item in value:
            _reject_intrinsics(item, logical_id)


def _wait_until_active(client: DynamoDBClient, table_name: str, timeout: float) -> None:
    # DynamoDB Local and moto create tables ACTIVE at once; the loop is for engines that take time.
    deadline = time.monotonic() + timeout
    while True:
        table = client.describe_table(TableName=table_name)["Table"]
        statuses = [table.get("TableStatus")]
        statuses += [index.get("IndexStatus") for index in table.get("GlobalSecondaryIndexes", [])]
        if all(status == "ACTIVE" for status in statuses):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {table_name} not ACTIVE after {timeout:.0f}s: {statuses}")
        time.sleep(0.2)
