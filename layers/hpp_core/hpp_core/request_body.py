"""Reading an API request's body: the one size limit, strict JSON within bounds, and objects into models.

The limit is checked before anything is parsed, so an oversize body costs no parsing. JSON is read as
RFC 8259 defines it, by pydantic's own parser (no `NaN` / `Infinity`, no lone surrogates, UTF-8 only,
no stack to overflow), and then held to the bounds below; validation messages name the field and never
echo the input (it may hold a token).
"""

import base64
import binascii
import math

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from hpp_core.errors import BadRequest, PayloadTooLarge
from hpp_core.models import describe_validation_error

MAX_BODY_BYTES = 64 * 1024
# Klarna's bodies nest 3 or 4 levels deep; the create request a little more.
MAX_JSON_DEPTH = 32
_TOO_DEEP = f"nested deeper than {MAX_JSON_DEPTH} levels"
# The longest base64 text that can decode to MAX_BODY_BYTES (checked before decoding).
_MAX_BASE64_LENGTH = MAX_BODY_BYTES * 4 // 3 + 4


def body_bytes(body: bytes | str | None, *, what: str, base64_encoded: bool = False) -> bytes:
    """The body's bytes (decoded from base64 if API Gateway encoded it), at most MAX_BODY_BYTES."""
    if isinstance(body, str):
        if base64_encoded:
            return _within_limit(_from_base64(body, what), what)
        # surrogatepass: a lone surrogate (the event is JSON, which can carry one) becomes bytes that are
        # not UTF-8, which the JSON reader then refuses, instead of an encoding error here.
        body = _within_limit(body, what).encode("utf-8", "surrogatepass")
    return _within_limit(body or b"", what)


def _from_base64(text: str, what: str) -> bytes:
    if len(text) > _MAX_BASE64_LENGTH:
        raise PayloadTooLarge(f"{what} is larger than {MAX_BODY_BYTES} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not valid base64") from None


def _within_limit[T: (bytes, str)](body: T, what: str) -> T:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"{what} is larger than {MAX_BODY_BYTES} bytes")
    return body


def json_value(raw: bytes) -> object:
    """`raw` parsed as strict JSON; ValueError saying why when it is not JSON (bad UTF-8, `NaN`, a lone
    surrogate, ...), holds a number no float can (`1e400`), or nests deeper than MAX_JSON_DEPTH."""
    try:
        value = from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        if "recursion limit" in str(exc):  # the parser's own bound, deeper than ours
            raise ValueError(_TOO_DEEP) from None
        # The parser's messages name a position, never the text there.
        raise ValueError(str(exc)) from None
    _check_bounds(value)
    return value


def _check_bounds(value: object) -> None:
    """Depth and numbers, walked without recursion (the value may be as deep as the parser allows).

    The parser gives exactly dict, list, float, int, str, bool and None, so types are compared, not
    tested with isinstance, and only containers are queued: every callback body is walked.
    """
    _check_number(value)
    if type(value) is not dict and type(value) is not list:
        return
    pending: list[tuple[dict[str, object] | list[object], int]] = [(value, 0)]
    while pending:
        container, depth = pending.pop()
        if depth >= MAX_JSON_DEPTH:
            raise ValueError(_TOO_DEEP)
        for child in container.values() if type(container) is dict else container:
            if type(child) is dict or type(child) is list:
                pending.append((child, depth + 1))
            else:
                _check_number(child)


def _check_number(value: object) -> None:
    if type(value) is float and not math.isfinite(value):
        raise ValueError("a number is too large")


def validated_object[M: BaseModel](model: type[M], payload: object, *, what: str) -> M:
    """A parsed JSON value as `model`: it must be an object, and valid (400 naming each bad field)."""
    if not isinstance(payload, dict):
        raise BadRequest(f"{what} must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(f"{what} is invalid", details=describe_validation_error(exc)) from None
