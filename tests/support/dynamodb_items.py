"""DynamoDB items as boto3's TypeDeserializer reads them (numbers stay Decimals): for tests that check
what a table holds without going through the repository's own reading of it."""

from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

_deserializer = TypeDeserializer()


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}
