"""Reading an API request's body: the one size limit, and JSON objects into models.

The limit is checked before anything is parsed, so an oversize body costs no parsing; validation
messages name the field and never echo the input (it may hold a token).
"""

import base64
import binascii
import json

from pydantic import BaseModel, ValidationError

from hpp_core.errors import BadRequest, PayloadTooLarge
from hpp_core.models import describe_validation_error

MAX_BODY_BYTES = 64 * 1024
# The longest base64 text that can decode to MAX_BODY_BYTES (checked before decoding).
_MAX_BASE64_LENGTH = MAX_BODY_BYTES * 4 // 3 + 4


def body_bytes(body: bytes | str | None, *, what: str, base64_encoded: bool = False) -> bytes:
    """The body's bytes (decoded from base64 if API Gateway encoded it), at most MAX_BODY_BYTES."""
    if isinstance(body, str):
        if base64_encoded:
            return _within_limit(_from_base64(body, what), what)
        body = _within_limit(body, what).encode("utf-8")
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
    """`raw` parsed as JSON; ValueError when it is not JSON (bad UTF-8 included) or is nested deeper
    than the parser can follow (which would otherwise escape as a RecursionError: a 500)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def validated_object[M: BaseModel](model: type[M], payload: object, *, what: str) -> M:
    """A parsed JSON value as `model`: it must be an object, and valid (400 naming each bad field)."""
    if not isinstance(payload, dict):
        raise BadRequest(f"{what} must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(f"{what} is invalid", details=describe_validation_error(exc)) from None
