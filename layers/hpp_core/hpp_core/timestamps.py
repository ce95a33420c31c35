"""Klarna timestamps: any ISO 8601 form in, one exact UTC form out.

Klarna's HPP examples use `2019-05-13T14:51:46.288Z`, but its general rule also allows no fractional
part, and nothing stops an offset. Ordering is therefore decided on an integer (epoch milliseconds),
never on strings, and every stored timestamp is rendered the same way.
"""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

# Klarna's dates are all of this century. The bounds keep hostile ones from arithmetic that overflows (a
# year-1 date with a positive offset has no UTC form) and from forms the stored format cannot render;
# they also keep the ordering key (epoch milliseconds) positive.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive
_OUT_OF_RANGE = "must be from 1970-01-01T00:00:00Z up to (not including) 3000-01-01T00:00:00Z"


def parse_timestamp(value: object) -> datetime:
    """Parse an ISO 8601 string to an aware UTC datetime truncated to milliseconds, within the bounds.

    A timestamp without an offset is taken as UTC (Klarna documents every date as UTC).
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError("must be an ISO 8601 date-time, e.g. 2019-05-13T14:54:04.675Z") from exc
    else:
        raise ValueError("must be an ISO 8601 date-time string")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(_OUT_OF_RANGE) from None
    if not EARLIEST <= parsed < LATEST:
        raise ValueError(_OUT_OF_RANGE)
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


def to_epoch_millis(moment: datetime) -> int:
    """Exact integer milliseconds since the epoch (no float rounding)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_timestamp(moment: datetime) -> str:
    """The one stored form: UTC, milliseconds (truncated), `Z`."""
    # isoformat (half strftime's cost; every write formats two or three) ends an aware UTC time "+00:00".
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def utc_now() -> datetime:
    return parse_timestamp(datetime.now(UTC))


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]
"""A pydantic field type: ISO 8601 in (normalised to UTC milliseconds), the one stored form out in JSON."""
