"""Reading request bodies: the one size limit and JSON, for the callback and the sessions API alike."""

import base64
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpp_core.callbacks import parse_callback_body
from hpp_core.errors import BadRequest, PayloadTooLarge
from hpp_core.models import CallbackBody
from hpp_core.request_body import MAX_BODY_BYTES, MAX_JSON_DEPTH, _check_bounds, body_bytes, json_value
from hpp_core.sessions import parse_create_request

# Deeper than Python's JSON parser can follow, and well under the size limit.
TOO_DEEP = "[" * 30_000 + "]" * 30_000


@pytest.mark.parametrize("body", ["x" * MAX_BODY_BYTES, b"x" * MAX_BODY_BYTES, "é" * (MAX_BODY_BYTES // 2)])
def test_a_body_at_the_limit_is_read(body: str | bytes) -> None:
    assert len(body_bytes(body, what="body")) == MAX_BODY_BYTES


@pytest.mark.parametrize(
    "body", ["x" * (MAX_BODY_BYTES + 1), b"x" * (MAX_BODY_BYTES + 1), "é" * (MAX_BODY_BYTES // 2 + 1)]
)
def test_a_body_over_the_limit_is_refused_by_its_bytes_not_its_characters(body: str | bytes) -> None:
    with pytest.raises(PayloadTooLarge, match=f"callback body is larger than {MAX_BODY_BYTES} bytes"):
        body_bytes(body, what="callback body")


def test_base64_is_limited_by_its_decoded_size_and_must_be_base64() -> None:
    at_limit = base64.b64encode(b"x" * MAX_BODY_BYTES).decode()
    assert body_bytes(at_limit, what="body", base64_encoded=True) == b"x" * MAX_BODY_BYTES
    with pytest.raises(PayloadTooLarge):
        body_bytes(base64.b64encode(b"x" * (MAX_BODY_BYTES + 1)).decode(), what="body", base64_encoded=True)
    with pytest.raises(BadRequest, match="request body is not valid base64"):
        body_bytes("not base64!", what="request body", base64_encoded=True)


def test_json_nested_deeper_than_the_parser_goes_is_not_json_rather_than_a_crash() -> None:
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        json_value(TOO_DEEP.encode())


@pytest.mark.parametrize("nest", [lambda v: [v], lambda v: {"k": v}])
def test_json_is_read_to_max_depth_and_refused_one_level_deeper(nest: Any) -> None:
    value: object = 1
    for _ in range(MAX_JSON_DEPTH):
        value = nest(value)
    assert json_value(json.dumps(value).encode()) == value
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        json_value(json.dumps(nest(value)).encode())


# What Python's json module accepts but JSON (RFC 8259) does not, and numbers no float holds.
NOT_STRICT_JSON = [
    '{"amount": NaN}',
    '{"amount": Infinity}',
    '{"amount": -Infinity}',
    '{"amount": 1e400}',
    '{"amount": -1e400}',
    '{"name": "\\ud800"}',  # a lone surrogate, escaped
    "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
]


@pytest.mark.parametrize("text", NOT_STRICT_JSON)
def test_what_strict_json_refuses_is_not_json(text: str) -> None:
    with pytest.raises(ValueError):
        json_value(text.encode())


@pytest.mark.parametrize("text", NOT_STRICT_JSON)
def test_a_create_request_that_is_not_strict_json_is_a_400_saying_why(text: str) -> None:
    # The finding: NaN / Infinity were taken, and sent on to Klarna as null.
    valid_url = '{"payment_session_url": "https://pay.example/s/1", '
    body = text.replace("{", valid_url, 1) if "{" in text else text
    with pytest.raises(BadRequest, match="request body is not valid JSON: ") as refused:
        parse_create_request(body)
    assert "ud800" not in refused.value.message, "the message says why, without echoing the body"


@pytest.mark.parametrize("text", NOT_STRICT_JSON)
def test_a_callback_body_that_is_not_strict_json_is_unparsable_so_klarna_is_asked(text: str) -> None:
    body = text.replace("{", '{"session": {"session_id": "s1"}, ', 1) if "{" in text else text
    assert parse_callback_body(body) is None


def test_a_lone_surrogate_in_the_event_body_is_refused_not_an_encoding_crash() -> None:
    body = '{"payment_session_url": "https://pay.example/s/1", "name": "\ud800"}'
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_create_request(body)
    assert parse_callback_body("\udfff") is None


def test_a_too_deep_callback_body_is_unparsable_so_klarna_is_asked() -> None:
    assert parse_callback_body(TOO_DEEP) is None


def test_a_too_deep_create_request_is_a_400() -> None:
    with pytest.raises(BadRequest, match=f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"):
        parse_create_request(TOO_DEEP)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=512) | st.text(max_size=512) | JSON.map(json.dumps))
def test_a_callback_body_is_a_callback_nothing_or_a_400(body: bytes | str) -> None:
    try:
        parsed = parse_callback_body(body)
    except BadRequest as exc:
        assert exc.status_code == 400
    else:
        assert parsed is None or isinstance(parsed, CallbackBody)


def _bounds_problem(value: Any, depth: int = 0) -> bool:
    """The bounds, written plainly: a non-finite number anywhere, or a container MAX_JSON_DEPTH deep."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return depth >= MAX_JSON_DEPTH or any(_bounds_problem(child, depth + 1) for child in children)
    return False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=30,
)


@given(json_values, st.integers(min_value=0, max_value=MAX_JSON_DEPTH + 3), st.booleans())
def test_the_bounds_walk_refuses_exactly_what_the_bounds_say(value: Any, wrap: int, in_object: bool) -> None:
    for _ in range(wrap):
        value = {"k": value} if in_object else [value]
    try:
        _check_bounds(value)
    except ValueError:
        refused = True
    else:
        refused = False
    assert refused == _bounds_problem(value)
