"""Read template.yaml and create its DynamoDB tables locally, exactly as CloudFormation would define them.

The local stack and the tests build their tables from the template instead of repeating its key schema,
indexes and stream settings, so a change to the template is what runs locally and what the tests exercise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "template.yaml"
TABLE_TYPE = "AWS::DynamoDB::Table"

# Properties of AWS::DynamoDB::Table that CreateTable takes as they are. The rest are either
# CloudFormation-only (PointInTimeRecoverySpecification, SSESpecification, Tags,
# DeletionProtectionEnabled, ContributorInsightsSpecification, ...) or converted below.
_TABLE_KEYS = ("AttributeDefinitions", "KeySchema")
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection")


class TemplateError(ValueError):
    """The template lacks what was asked for, or holds it in a form that cannot be resolved locally."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation's short-form tags (!Ref, !GetAtt, !Sub, ...)."""


def _construct_intrinsic(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    # !Ref and !Condition keep their names; every other tag is a function: !Sub -> {"Fn::Sub": ...}.
    key = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":  # short form "Resource.Attribute" is the list form's two items
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {key: value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as plain data, short-form tags turned into their long (JSON) form."""
    with path.open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(document, dict):
        raise TemplateError(f"{path} is not a YAML mapping")
    return document


def table_resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every AWS::DynamoDB::Table resource by logical id."""
    resources: dict[str, dict[str, Any]] = template.get("Resources") or {}
    return {name: res for name, res in resources.items() if res.get("Type") == TABLE_TYPE}


@dataclass(frozen=True)
class TableDefinition:
    """What CreateTable needs (without TableName, which the caller picks) plus the TTL attribute."""

    create_table_kwargs: dict[str, Any] = field(default_factory=dict)
    ttl_attribute: str | None = None


def table_definition(logical_id: str, template: dict[str, Any] | None = None) -> TableDefinition:
    """CreateTable arguments for the table resource ``logical_id`` of template.yaml (or ``template``)."""
    template = load_template() if template is None else template
    resource = (template.get("Resources") or {}).get(logical_id)
    if resource is None:
        raise TemplateError(f"no resource {logical_id!r} in the template")
    if resource.get("Type") != TABLE_TYPE:
        raise TemplateError(f"{logical_id} is a {resource.get('Type')}, not an {TABLE_TYPE}")
    props: dict[str, Any] = resource.get("Properties") or {}

    kwargs: dict[str, Any] = {key: props[key] for key in _TABLE_KEYS if key in props}
    billing_mode = props.get("BillingMode", "PROVISIONED")  # CloudFormation's default
    kwargs["BillingMode"] = billing_mode
    provisioned = billing_mode == "PROVISIONED"
    if provisioned:
        kwargs["ProvisionedThroughput"] = props.get(
            "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        )
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            # Only a global index has throughput of its own; a local one shares the table's.
            throughput = provisioned and key == "GlobalSecondaryIndexes"
            kwargs[key] = [_index(index, with_throughput=throughput) for index in props[key]]
    # CloudFormation enables the stream by naming a view type; CreateTable wants both.
    stream = props.get("StreamSpecification")
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}

    _reject_intrinsics(kwargs, logical_id)
    ttl = props.get("TimeToLiveSpecification") or {}
    ttl_attribute = ttl.get("AttributeName") if ttl.get("Enabled", False) is not False else None
    if ttl_attribute is not None and not isinstance(ttl_attribute, str):
        raise TemplateError(f"{logical_id}: TimeToLiveSpecification.AttributeName must be a literal string")
    return TableDefinition(create_table_kwargs=kwargs, ttl_attribute=ttl_attribute)


def create_table(
    client: DynamoDBClient,
    logical_id: str,
    table_name: str,
    *,
    template: dict[str, Any] | None = None,
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


def _index(index: dict[str, Any], *, with_throughput: bool) -> dict[str, Any]:
    converted = {key: index[key] for key in _INDEX_KEYS if key in index}
    if with_throughput:
        converted["ProvisionedThroughput"] = index.get(
            "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        )
    return converted


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
