"""Klarna's HPP API rules that do not depend on any session: the error format, Basic auth, what a
Create Session body must look like, and what Create Session answers (docs/klarna-hpp.md)."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from local.common.httpserver import Response

if TYPE_CHECKING:
    import random

SESSIONS_PATH = "/hpp/v1/sessions"
PLACE_ORDER_MODES = frozenset({"NONE", "PLACE_ORDER", "CAPTURE_ORDER"})
DISTRIBUTION_METHODS = frozenset({"sms", "email", "token"})

# The error_code Klarna uses for a status, where it documents or shows one.
_ERROR_CODES: dict[int, str] = {
    400: "BAD_VALUE",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


class Rejected(Exception):
    """An error answer in Klarna's format (raised from deep in a route)."""

    def __init__(
        self, status: int, error_code: str, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = list(headers)

    def response(self, correlation_id: str) -> Response:
        return error_response(self.status, self.error_code, self.message, correlation_id, self.headers)


def error_response(
    status: int,
    error_code: str,
    message: str,
    correlation_id: str,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    body = {"error_code": error_code, "error_messages": [message], "correlation_id": correlation_id}
    return Response.json(status, body, headers)


def default_error_code(status: int) -> str:
    if status in _ERROR_CODES:
        return _ERROR_CODES[status]
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "ERROR"


def credentials_match(header: str | None, username: str, password: str) -> bool:
    """Whether an Authorization header is HTTP Basic with exactly these credentials."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_username, sep, given_password = decoded.partition(":")
    return bool(sep) and given_username == username and given_password == password


# -- Create Session ------------------------------------------------------------------------------------

type _Rule = Callable[[dict[str, Any]], str | None]


def _payment_session_url_problem(payload: dict[str, Any]) -> str | None:
    url = payload.get("payment_session_url")
    if not isinstance(url, str) or not url:
        return "Missing required field: payment_session_url"
    # Klarna needs the URL of an existing Klarna Payments session (or Klarna Checkout order).
    if not url.startswith(("http://", "https://")) or not (
        "/payments/v1/sessions/" in url or "/checkout/v3/orders/" in url
    ):
        return "Bad value: payment_session_url"
    return None


def _merchant_urls_problem(payload: dict[str, Any]) -> str | None:
    merchant_urls = payload.get("merchant_urls")
    if merchant_urls is None:
        return None
    if isinstance(merchant_urls, dict) and all(isinstance(value, str) for value in merchant_urls.values()):
        return None
    return "Bad value: merchant_urls"


def _options_problem(payload: dict[str, Any]) -> str | None:
    options = payload.get("options")
    if options is None:
        return None
    if not isinstance(options, dict):
        return "Bad value: options"
    if options.get("place_order_mode", "NONE") not in PLACE_ORDER_MODES:
        return "Bad value: options.place_order_mode"
    return None


def _profile_id_problem(payload: dict[str, Any]) -> str | None:
    profile_id = payload.get("profile_id")
    return None if profile_id is None or isinstance(profile_id, str) else "Bad value: profile_id"


# In the order Klarna's messages name them; a new rule (e.g. an options enum) is one more function.
_CREATE_RULES: tuple[_Rule, ...] = (
    _payment_session_url_problem,
    _merchant_urls_problem,
    _options_problem,
    _profile_id_problem,
)


def check_create_request(payload: object) -> dict[str, Any]:
    """The Create Session body, or Klarna's 400 naming the first field that breaks its rules."""
    if not isinstance(payload, dict):
        raise Rejected(400, "BAD_VALUE", "Request body must be a JSON object")
    for rule in _CREATE_RULES:
        problem = rule(payload)
        if problem is not None:
            raise Rejected(400, "BAD_VALUE", problem)
    return payload


def created_body(base_url: str, session_id: str, expires_at: str, rng: random.Random) -> dict[str, Any]:
    """Create Session's 201 body: the URLs Klarna hands out for the session."""
    session_url = f"{base_url}{SESSIONS_PATH}/{session_id}"
    pay_url = f"{base_url}/pay/{session_id}"
    return {
        "session_id": session_id,
        "session_url": session_url,
        "redirect_url": pay_url,
        "qr_code_url": f"{pay_url}/qr",
        "distribution_url": f"{session_url}/distribution",
        "distribution_module": {
            "token": seeded_uuid(rng),
            "standalone_url": pay_url,
            "generation_url": f"{session_url}/distribution",
        },
        "expires_at": expires_at,
    }


def seeded_uuid(rng: random.Random) -> str:
    """A version-4 UUID from the session's own generator, so a seed gives the same ids every run."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
