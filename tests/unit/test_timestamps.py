import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpp_core.callbacks import parse_callback_body
from hpp_core.errors import BadRequest
from hpp_core.timestamps import format_timestamp, parse_timestamp, to_epoch_millis

SAME_MOMENT = [
    "2019-05-13T14:54:04.675Z",
    "2019-05-13T14:54:04.675+00:00",
    "2019-05-13T16:54:04.675+02:00",
    "2019-05-13T09:54:04.675-05:00",
    "2019-05-13T14:54:04.675000Z",
    "2019-05-13T14:54:04.675999Z",  # sub-millisecond digits are truncated, never rounded up
    "2019-05-13 14:54:04.675Z",
    "2019-05-13T14:54:04.675",  # no offset: Klarna's dates are UTC
]


@pytest.mark.parametrize("text", SAME_MOMENT)
def test_every_iso_form_of_one_moment_normalises_to_the_same_stored_form(text: str) -> None:
    assert format_timestamp(parse_timestamp(text)) == "2019-05-13T14:54:04.675Z"
    assert to_epoch_millis(parse_timestamp(text)) == 1557759244675


def test_a_date_without_fraction_gets_milliseconds() -> None:
    assert format_timestamp(parse_timestamp("2019-05-13T14:54:04Z")) == "2019-05-13T14:54:04.000Z"


def test_ordering_is_decided_on_the_instant_not_the_text() -> None:
    # As strings "…14:54:04Z" > "…14:54:04.001Z" (since "Z" > "."); as instants it is the other way round.
    earlier_text, later_text = "2019-05-13T14:54:04Z", "2019-05-13T14:54:04.001Z"
    assert earlier_text > later_text
    assert to_epoch_millis(parse_timestamp(earlier_text)) < to_epoch_millis(parse_timestamp(later_text))
    # An offset that reads "later" can be the earlier instant.
    assert to_epoch_millis(parse_timestamp("2019-05-13T15:00:00+02:00")) < to_epoch_millis(
        parse_timestamp("2019-05-13T14:00:00Z")
    )


@pytest.mark.parametrize(
    "value", ["", "yesterday", "2019-13-45T00:00:00Z", "14:54:04", 1557759244, None, 12.5, ["2019-05-13"]]
)
def test_anything_but_an_iso_string_is_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_timestamp(value)


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        ),
    )
)
def test_parse_format_round_trip_is_exact_to_the_millisecond(moment: datetime) -> None:
    parsed = parse_timestamp(moment.isoformat())
    assert parse_timestamp(format_timestamp(parsed)) == parsed
    # Whole seconds and milliseconds apart: timestamp() * 1000 in floats can land a hair under the value.
    whole_ms = int(moment.timestamp()) * 1000 + moment.microsecond // 1000
    expected_ms = whole_ms if moment.microsecond % 1000 == 0 else None
    if expected_ms is not None:
        assert to_epoch_millis(parsed) == expected_ms
    assert to_epoch_millis(parsed) == (
        moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    ) // timedelta(milliseconds=1)


# The finding: converting these to UTC overflowed (OverflowError: a 500 for the caller).
OVERFLOWING = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
OUT_OF_RANGE = [
    *OVERFLOWING,
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "3000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2999-12-31T23:00:00-01:00",  # 3000-01-01T00:00Z in UTC
]


@pytest.mark.parametrize("text", OUT_OF_RANGE)
def test_a_date_outside_the_sane_range_is_a_value_error_naming_the_range(text: str) -> None:
    with pytest.raises(ValueError, match="must be from 1970-01-01T00:00:00Z up to"):
        parse_timestamp(text)


@pytest.mark.parametrize(
    "text", ["1970-01-01T00:00:00Z", "2999-12-31T23:59:59.999Z", "1970-01-01T01:00:00+01:00"]
)
def test_the_ends_of_the_range_are_taken(text: str) -> None:
    assert format_timestamp(parse_timestamp(text)) in {"1970-01-01T00:00:00.000Z", "2999-12-31T23:59:59.999Z"}


@pytest.mark.parametrize("field", ["updated_at", "expires_at"])
@pytest.mark.parametrize("text", OVERFLOWING)
def test_an_overflowing_callback_date_is_a_400_naming_the_field(field: str, text: str) -> None:
    session = {"session_id": "s1", "status": "IN_PROGRESS", "updated_at": "2019-05-13T14:52:10.120Z"}
    with pytest.raises(BadRequest) as refused:
        parse_callback_body(json.dumps({"session": {**session, field: text}}))
    (detail,) = refused.value.details
    assert detail.startswith(f"session.{field}: ")
    assert text not in detail


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=12))]),
    )
)
def test_the_stored_form_is_utc_milliseconds_truncated_and_z(moment: datetime) -> None:
    utc = moment.astimezone(UTC)
    date = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
    time = f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}"
    assert format_timestamp(moment) == f"{date}T{time}Z"
