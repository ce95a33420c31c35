"""A function's DynamoDB stream event source mapping, read from template.yaml, applied as Lambda applies it.

`StreamMapping.from_template(Template.load(), "PublisherFunction")` gives the settings Lambda runs the stream
with (batch size, starting position, retries, record age, bisect, partial batch responses) and its
`StreamFilter`, which decides which records Lambda hands the function. `records_to_retry` says which
records Lambda delivers again after a partial batch response. The tests and the local stack's stream
pump share these, so both run the function exactly as the template configures it.

Filters are matched with moto's EventBridge pattern matcher (`moto.events.models.EventPattern`): Lambda's
filter rules are EventBridge's pattern syntax. The matcher accepts more than Lambda documents, and treats
an operator it does not know as a match, so patterns are first checked against Lambda's own limits and
documented operators: a pattern Lambda would reject or misread fails here, loudly, instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from moto.events.models import EventPattern

from local.template import Template, TemplateError

# Lambda's limits (docs: "Control which events Lambda sends to your function"; API: Filter.Pattern).
MAX_FILTERS = 5  # per event source mapping, by default (10 with a quota increase)
MAX_PATTERN_LENGTH = 4096
# The comparison operators Lambda's filter rule syntax documents, besides plain values (equals, or,
# null, empty) and nesting (and). No "$or", no "wildcard", no "cidr".
DOCUMENTED_OPERATORS = frozenset(
    {"anything-but", "numeric", "exists", "prefix", "suffix", "equals-ignore-case"}
)

_DYNAMODB_EVENT = "DynamoDB"


class MappingError(ValueError):
    """The template's mapping (or a filter in it) is missing, malformed, or something Lambda would refuse."""


@dataclass(frozen=True)
class StreamFilter:
    """A FilterCriteria: a record passes if any pattern matches it; with no patterns, every record does."""

    patterns: tuple[str, ...] = ()
    _matchers: tuple[EventPattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.patterns) > MAX_FILTERS:
            raise MappingError(f"{len(self.patterns)} filters: Lambda allows {MAX_FILTERS} by default")
        matchers = []
        for number, pattern in enumerate(self.patterns, start=1):
            check_pattern(pattern, f"filter {number}")
            matchers.append(EventPattern.load(pattern))
        object.__setattr__(self, "_matchers", tuple(matchers))

    @classmethod
    def from_filter_criteria(cls, criteria: Mapping[str, Any] | None) -> StreamFilter:
        """From FilterCriteria as CloudFormation and Lambda write it: {"Filters": [{"Pattern": ...}]}."""
        filters = (criteria or {}).get("Filters") or []
        patterns = []
        for number, item in enumerate(filters, start=1):
            pattern = item.get("Pattern") if isinstance(item, Mapping) else None
            if not isinstance(pattern, str):
                raise MappingError(f"filter {number}: Pattern must be a JSON string")
            patterns.append(pattern)
        return cls(tuple(patterns))

    def matches(self, record: Mapping[str, Any]) -> bool:
        return not self._matchers or any(
            matcher.matches_event(cast(Any, dict(record))) for matcher in self._matchers
        )

    def select(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The records Lambda would hand the function, in order."""
        return [dict(record) for record in records if self.matches(record)]


def check_pattern(pattern: str, where: str = "pattern") -> dict[str, Any]:
    """The parsed pattern, or MappingError if Lambda would refuse it or this matcher could misread it."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise MappingError(f"{where}: {len(pattern)} characters, Lambda allows {MAX_PATTERN_LENGTH}")
    try:
        parsed = json.loads(pattern)
    except json.JSONDecodeError as exc:
        raise MappingError(f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(parsed, dict) or not parsed:
        raise MappingError(f"{where}: must be a non-empty JSON object")
    _check_node(parsed, where)
    return parsed


def _check_node(node: Mapping[str, Any], where: str) -> None:
    for key, value in node.items():
        if key.startswith("$"):
            raise MappingError(f"{where}: {key!r} is not in Lambda's documented filter syntax")
        if isinstance(value, Mapping):
            if not value:
                raise MappingError(f"{where}: {key!r} is an empty object")
            _check_node(value, where)
        elif isinstance(value, list):
            if not value:
                raise MappingError(f"{where}: {key!r} is an empty list")
            for rule in value:
                _check_rule(rule, key, where)
        else:
            raise MappingError(f"{where}: {key!r} must be an object or a list of rules")


def _check_rule(rule: Any, key: str, where: str) -> None:
    """One item of a list of rules: a plain value, or one documented operator."""
    if isinstance(rule, Mapping):
        if len(rule) != 1 or set(rule) - DOCUMENTED_OPERATORS:
            raise MappingError(
                f"{where}: {key!r} uses {sorted(rule)}; Lambda documents "
                f"{sorted(DOCUMENTED_OPERATORS)}, one per rule"
            )
    elif not (rule is None or isinstance(rule, str | int | float | bool)):
        raise MappingError(f"{where}: {key!r} holds {type(rule).__name__}, not a value or rule")


@dataclass(frozen=True)
class StreamMapping:
    """What Lambda does with a function's DynamoDB stream, as the template says (CloudFormation defaults
    where it says nothing)."""

    function: str
    stream: Any  # the template's Stream value, e.g. {"Fn::GetAtt": ["SessionsTable", "StreamArn"]}
    starting_position: str
    batch_size: int = 100
    maximum_batching_window_seconds: int = 0
    maximum_retry_attempts: int = -1  # -1: until the record expires
    maximum_record_age_seconds: int = -1  # -1: the stream's retention (24 h)
    bisect_batch_on_function_error: bool = False
    report_batch_item_failures: bool = False
    on_failure_destination: Any = None
    filter: StreamFilter = field(default_factory=StreamFilter)
    enabled: bool = True

    @classmethod
    def from_template(cls, template: Template, function: str, event: str | None = None) -> StreamMapping:
        """The DynamoDB event `event` of the SAM function `function` (the only one when `event` is None)."""
        try:
            spec = template.function(function)
        except TemplateError as error:
            raise MappingError(str(error)) from None
        streams = {stream.name: stream for stream in spec.events_of(_DYNAMODB_EVENT)}
        if event is None:
            if len(streams) != 1:
                raise MappingError(f"{function} has {len(streams)} DynamoDB events: name the one you mean")
            event = next(iter(streams))
        if event not in streams:
            raise MappingError(f"{function} has no DynamoDB event {event!r}")
        return cls.from_event(function, streams[event].properties)

    @classmethod
    def from_event(cls, function: str, props: Mapping[str, Any]) -> StreamMapping:
        """From a SAM `DynamoDB` event's properties (as written, or resolved by the local stack)."""
        return cls(
            function=function,
            stream=props.get("Stream"),
            starting_position=str(props.get("StartingPosition", "")),
            batch_size=int(props.get("BatchSize", 100)),
            maximum_batching_window_seconds=int(props.get("MaximumBatchingWindowInSeconds", 0)),
            maximum_retry_attempts=int(props.get("MaximumRetryAttempts", -1)),
            maximum_record_age_seconds=int(props.get("MaximumRecordAgeInSeconds", -1)),
            bisect_batch_on_function_error=_flag(props.get("BisectBatchOnFunctionError", False)),
            report_batch_item_failures="ReportBatchItemFailures"
            in (props.get("FunctionResponseTypes") or []),
            on_failure_destination=((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
                "Destination"
            ),
            filter=StreamFilter.from_filter_criteria(props.get("FilterCriteria")),
            enabled=_flag(props.get("Enabled", True)),
        )


def _flag(value: Any) -> bool:
    """A template boolean (YAML true, or "true" once resolved from a parameter)."""
    return value is True or str(value).lower() == "true"


def records_to_retry(batch: Sequence[Mapping[str, Any]], response: Any) -> list[dict[str, Any]]:
    """What Lambda delivers again after a stream function (with ReportBatchItemFailures) returned
    `response` for `batch`.

    Success (nothing again): None, {}, or no or an empty `batchItemFailures`. Otherwise Lambda retries
    from the lowest sequence number reported: that record and every record after it. A response Lambda
    cannot read (not an object, an item without a string `itemIdentifier`, one that is not in the batch)
    fails the whole batch. A function that raised fails the whole batch too: the caller retries `batch`.
    """
    if response is None:
        return []
    if not isinstance(response, Mapping):
        return [dict(record) for record in batch]
    failures = response.get("batchItemFailures")
    if not failures:
        return []
    return [dict(record) for record in batch[_retry_from(batch, failures) :]]


def _retry_from(batch: Sequence[Mapping[str, Any]], failures: Any) -> int:
    """The position in `batch` of the earliest record `failures` reports; 0 (the whole batch) when Lambda
    cannot read the report (not a list, an item without a string `itemIdentifier`, one not in the batch)."""
    if not isinstance(failures, list):
        return 0
    positions = {record["dynamodb"]["SequenceNumber"]: index for index, record in enumerate(batch)}
    identifiers = [item.get("itemIdentifier") if isinstance(item, Mapping) else None for item in failures]
    if not all(isinstance(identifier, str) and identifier in positions for identifier in identifiers):
        return 0
    return min(positions[identifier] for identifier in identifiers)
