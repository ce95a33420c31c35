"""Lambda's event filtering (an event source mapping's FilterCriteria), evaluated with moto's matcher.

moto implements EventBridge's event-pattern language (the one Lambda filters use: exact values, prefix,
suffix, anything-but, numeric, exists, equals-ignore-case, wildcard, cidr, $or). This module adds what
Lambda does around it: several filters are OR-ed, no filters pass everything, and a pattern is checked
when it is loaded, so an operator moto does not know fails loudly instead of matching everything.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from moto.events.models import EventPattern

if TYPE_CHECKING:
    from moto.events.models import EventMessageType

# The comparison operators of the pattern language (moto treats an unknown one as a match: refuse it).
OPERATORS = frozenset(
    {"prefix", "suffix", "anything-but", "numeric", "exists", "equals-ignore-case", "wildcard", "cidr"}
)


class InvalidFilterError(ValueError):
    """A filter pattern is not valid JSON or uses something the pattern language does not have."""


def _check(node: Any, where: str) -> None:
    if not isinstance(node, dict):
        raise InvalidFilterError(f"{where}: a pattern must be a JSON object")
    for key, value in node.items():
        if key == "$or":
            if not isinstance(value, list) or not value:
                raise InvalidFilterError(f"{where}: $or needs a non-empty list of patterns")
            for item in value:
                _check(item, where)
        elif isinstance(value, dict):
            _check(value, f"{where}.{key}")
        elif isinstance(value, list):
            _check_rules(value, f"{where}.{key}")
        else:
            raise InvalidFilterError(f"{where}.{key}: must be an object or an array")


def _check_rules(rules: list[Any], where: str) -> None:
    if not rules:
        raise InvalidFilterError(f"{where}: empty arrays are not allowed")
    for rule in rules:
        if isinstance(rule, dict):
            operators = set(rule)
            if len(operators) != 1 or not operators <= OPERATORS:
                raise InvalidFilterError(f"{where}: unknown operator {sorted(operators)}")


def load_pattern(pattern: str | Mapping[str, Any]) -> EventPattern:
    raw = pattern if isinstance(pattern, str) else json.dumps(pattern)
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise InvalidFilterError(f"not valid JSON: {raw[:80]!r}") from None
    _check(parsed, "pattern")
    return EventPattern.load(raw)


class FilterCriteria:
    """A mapping's FilterCriteria: a record passes if any filter's pattern matches it (or there are none)."""

    def __init__(self, patterns: Iterable[str | Mapping[str, Any]] = ()) -> None:
        self.patterns = [load_pattern(pattern) for pattern in patterns]

    @classmethod
    def from_template(cls, criteria: Mapping[str, Any] | None) -> FilterCriteria:
        """From SAM's `FilterCriteria: {Filters: [{Pattern: "..."}]}` (Pattern a JSON string or a mapping)."""
        filters = (criteria or {}).get("Filters") or []
        return cls(item["Pattern"] for item in filters)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, record: Mapping[str, Any]) -> bool:
        event = cast("EventMessageType", dict(record))
        return not self.patterns or any(pattern.matches_event(event) for pattern in self.patterns)
