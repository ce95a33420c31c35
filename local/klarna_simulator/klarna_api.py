"""Klarna's HPP API rules that do not depend on any session: the error format, Basic auth, what a
Create Session body must look like, and what Create Session answers (docs/klarna-hpp.md)."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from local.common.httpserver import Response

if TYPE_CHECKING:
    import random

SESSIONS_PATH = "/hpp/v1/sessions"
PLACE_ORDER_MODES = frozenset({"NONE", "PLACE_ORDER", "CAPTURE_ORDER"})
# `options` enums, as Klarna's HPP OpenAPI 1.1 lists them (SessionCreationRequestV1).
PURCHASE_TYPES = frozenset({"BUY", "RENT", "BOOK", "SUBSCRIBE", "DOWNLOAD", "ORDER", "CONTINUE"})
PAYMENT_METHOD_CATEGORIES = frozenset(
    {"DIRECT_DEBIT", "DIRECT_BANK_TRANSFER", "PAY_NOW", "PAY_LATER", "PAY_OVER_TIME", "KLARNA"}
)
SHOW_SUBTOTAL_DETAIL = frozenset({"HIDE"})
# What `payment_session_url` may name: a Klarna Payments session or a Klarna Checkout order.
_PAYMENT_SESSION_PATH = re.compile(r"^/(payments/v1/sessions|checkout/v3/orders)/[^/]+$")
KLARNA_CHECKOUT_PATH = "/checkout/v3/orders/"
# Distribution's methods and what each needs in `contact_information`.
DISTRIBUTION_CONTACTS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "sms": ("phone", "phone_country"),
    "token": ("access_id",),
}
_COUNTRY = re.compile(r"^[A-Z]{2}$")

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
    # Klarna needs the URL of an existing Klarna Payments session or Klarna Checkout order.
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not _PAYMENT_SESSION_PATH.match(parts.path):
        return "Bad value: payment_session_url"
    return None


def _merchant_urls_problem(payload: dict[str, Any]) -> str | None:
    merchant_urls = payload.get("merchant_urls")
    if merchant_urls is None:
        return None
    if isinstance(merchant_urls, dict) and all(isinstance(value, str) for value in merchant_urls.values()):
        return None
    return "Bad value: merchant_urls"


def _one_of(allowed: frozenset[str]) -> Callable[[object], bool]:
    return lambda value: value in allowed


def _all_of(allowed: frozenset[str]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, list) and all(item in allowed for item in value)


def _text(value: object) -> bool:
    return isinstance(value, str)


def _background_images(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(image, dict) and _text(image.get("url")) and type(image.get("width", 0)) is int
        for image in value
    )


# Each known option and the values it takes; options Klarna does not list pass (it may add some).
_OPTION_RULES: dict[str, Callable[[object], bool]] = {
    "place_order_mode": _one_of(PLACE_ORDER_MODES),
    "purchase_type": _one_of(PURCHASE_TYPES),
    "payment_method_category": _one_of(PAYMENT_METHOD_CATEGORIES),
    "payment_method_categories": _all_of(PAYMENT_METHOD_CATEGORIES),
    "show_subtotal_detail": _one_of(SHOW_SUBTOTAL_DETAIL),
    "logo_url": _text,
    "page_title": _text,
    "background_images": _background_images,
    "payment_fallback": lambda value: isinstance(value, bool),
}


def _options_problem(payload: dict[str, Any]) -> str | None:
    options = payload.get("options")
    if options is None:
        return None
    if not isinstance(options, dict):
        return "Bad value: options"
    for name, valid in _OPTION_RULES.items():
        if name in options and not valid(options[name]):
            return f"Bad value: options.{name}"
    return None


def _profile_id_problem(payload: dict[str, Any]) -> str | None:
    profile_id = payload.get("profile_id")
    return None if profile_id is None or isinstance(profile_id, str) else "Bad value: profile_id"


# In the order Klarna's messages name them; a new rule is one more function.
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


def created_body(
    base_url: str, api_path: str, session_id: str, expires_at: str, rng: random.Random
) -> dict[str, Any]:
    """Create Session's 201 body: the URLs Klarna hands out for the session (its API ones under
    `api_path`: the documented /hpp/v1/sessions, or another path to show a client uses what it got)."""
    session_url = f"{base_url}{api_path}/{session_id}"
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
        "manual_identification_check_url": f"{session_url}/manual-identification-check",
        "expires_at": expires_at,
    }


# -- Distribution --------------------------------------------------------------------------------------


def check_distribution_request(payload: object) -> dict[str, Any]:
    """The distribution body, or Klarna's 400 naming what is wrong (never echoing the contact data)."""
    if not isinstance(payload, dict):
        raise Rejected(400, "BAD_VALUE", "Request body must be a JSON object")
    method = payload.get("method")
    needed = DISTRIBUTION_CONTACTS.get(method) if isinstance(method, str) else None
    if needed is None:
        raise Rejected(400, "BAD_VALUE", f"Bad value: method (one of {', '.join(DISTRIBUTION_CONTACTS)})")
    contact = payload.get("contact_information")
    if not isinstance(contact, dict):
        raise Rejected(400, "BAD_VALUE", "Missing required field: contact_information")
    for name in needed:
        if not isinstance(contact.get(name), str) or not contact[name].strip():
            raise Rejected(400, "BAD_VALUE", f"Missing required field: contact_information.{name}")
    if method == "email" and "@" not in contact["email"]:
        raise Rejected(400, "BAD_VALUE", "Bad value: contact_information.email")
    if method == "sms" and not _COUNTRY.match(contact["phone_country"]):
        raise Rejected(400, "BAD_VALUE", "Bad value: contact_information.phone_country")
    return payload


def seeded_uuid(rng: random.Random) -> str:
    """A version-4 UUID from the session's own generator, so a seed gives the same ids every run."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
