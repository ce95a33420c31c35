"""Reading DynamoDB items: the repository's direct path for strings and numbers gives exactly what
boto3's TypeDeserializer (with ints for whole numbers) gives, for any attribute value DynamoDB can
return, and the rows it reads are the sessions that were written."""

import decimal
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from hypothesis import given
from hypothesis import strategies as st

from hpp_core.repository import _int_if_whole, _plain, _session_from_plain, to_item

_general = TypeDeserializer()

numbers_as_text = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.sampled_from(["0", "-0", "007", "-007", "1.0", "1E+3", "1e3", "-1.50", "0.000", "9" * 38, "9" * 39]),
    st.from_regex(r"\A-?[0-9]{1,40}\Z"),
)
scalars = st.one_of(
    st.text().map(lambda text: {"S": text}),
    numbers_as_text.map(lambda text: {"N": text}),
    st.booleans().map(lambda flag: {"BOOL": flag}),
    st.just({"NULL": True}),
    st.binary(max_size=8).map(lambda data: {"B": data}),
    st.lists(st.text(max_size=4), min_size=1, max_size=3, unique=True).map(lambda texts: {"SS": texts}),
)
attribute_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda values: {"L": values}),
        st.dictionaries(st.text(max_size=4), inner, max_size=3).map(lambda values: {"M": values}),
    ),
    max_leaves=6,
)


def general_path(value: Any) -> Any:
    try:
        return ("value", _int_if_whole(_general.deserialize(value)))
    except Exception as exc:  # the error is what is compared
        return ("error", type(exc))


def direct_path(value: dict[str, Any]) -> Any:
    try:
        return ("value", _plain({"attribute": value})["attribute"])
    except Exception as exc:  # the error is what is compared
        return ("error", type(exc))


@given(attribute_values)
def test_an_attribute_reads_as_the_general_deserializer_reads_it(value: dict[str, Any]) -> None:
    direct, general = direct_path(value), general_path(value)
    assert direct == general
    if direct[0] == "value":
        assert type(direct[1]) is type(general[1])


def test_whole_numbers_read_as_ints_and_others_stay_decimals() -> None:
    row = _plain(
        {"a": {"N": "42"}, "b": {"N": "-7"}, "c": {"N": "1.0"}, "d": {"N": "1.5"}, "e": {"N": "1" * 38}}
    )
    assert row["a"] == 42 and type(row["a"]) is int
    assert row["b"] == -7 and type(row["b"]) is int
    assert row["c"] == 1 and type(row["c"]) is int
    assert row["d"] == Decimal("1.5")
    assert row["e"] == int("1" * 38) and type(row["e"]) is int
    with pytest.raises(decimal.Inexact):  # beyond DynamoDB's precision: refused, as boto3 refuses it
        _plain({"f": {"N": "1" * 39}})


@given(
    st.fixed_dictionaries(
        {
            "session_id": st.from_regex(r"\A[A-Za-z0-9_-]{1,40}\Z"),
            "status": st.sampled_from(["WAITING", "IN_PROGRESS", "COMPLETED"]),
            "updated_at": st.just("2026-12-01T10:00:00.000Z"),
            "updated_at_ms": st.integers(min_value=0, max_value=2**53),
            "poll_attempts": st.integers(min_value=0, max_value=100),
            "callback_secret_sha256": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        }
    )
)
def test_a_written_row_reads_back_as_its_session(row: dict[str, Any]) -> None:
    item = {name: TypeSerializer().serialize(value) for name, value in row.items()}
    assert to_item(row) == item
    session = _session_from_plain(_plain(item))
    assert (session.session_id, session.status, session.updated_at_ms) == (
        row["session_id"],
        row["status"],
        row["updated_at_ms"],
    )
    assert session.accepts_callback_secret(row["callback_secret_sha256"])
