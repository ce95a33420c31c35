"""HTTP for every API function, in one place: errors to answers, and the answers' shape.

Each error becomes `{"error": {"code", "message", "details"?, "klarna"?}}` with the status it deserves,
and one structured log line. Nothing here ever echoes request data, so no secret or token can leak.
Powertools' event handler is not imported here: the callback (one route) answers with `proxy_answer`
and does without it (its package imports every resolver, a fifth of the callback's cold start); the
sessions API routes with hpp_core.rest_resolver, which registers these same answers.
"""

import json
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeGuard

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from hpp_core.errors import TrackerError

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.exceptions import ServiceError

from hpp_core.klarna import (
    KlarnaAuthFailed,
    KlarnaBadResponse,
    KlarnaError,
    KlarnaNotFound,
    KlarnaRateLimited,
    KlarnaRejected,
    KlarnaTimeout,
    KlarnaUrlRefused,
)

# Default answers for Klarna failures; an operation that knows better (a 404 that means "already gone",
# a 400 that means "already completed") raises its own TrackerError instead.
_KLARNA_STATUS: list[tuple[type[KlarnaError], int, str]] = [
    (KlarnaNotFound, 404, "klarna_not_found"),
    (KlarnaRejected, 400, "klarna_rejected"),
    (KlarnaRateLimited, 503, "klarna_rate_limited"),
    (KlarnaTimeout, 504, "klarna_timeout"),
    (KlarnaAuthFailed, 502, "klarna_credentials_refused"),
    (KlarnaBadResponse, 502, "klarna_bad_response"),
    # A URL Klarna returned for the session is not on KLARNA_API_URL: only the operator can tell why.
    (KlarnaUrlRefused, 502, "klarna_url_refused"),
]


def error_body(code: str, message: str, details: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    error.update({key: value for key, value in extra.items() if value is not None})
    return {"error": error}


def error_response(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and extra headers for any exception a handler lets escape."""
    if isinstance(exc, TrackerError):
        # An operation that re-raised a Klarna failure as its own answer still shows Klarna's details.
        cause = exc.__cause__
        klarna_details = _klarna_details(cause) if isinstance(cause, KlarnaError) else None
        body = error_body(exc.code, exc.message, exc.details, **exc.response_fields(), klarna=klarna_details)
        return exc.status_code, body, exc.response_headers()
    if isinstance(exc, KlarnaError):
        status, code = next(
            ((s, c) for kind, s, c in _KLARNA_STATUS if isinstance(exc, kind)), (502, "klarna_unavailable")
        )
        headers = {}
        if isinstance(exc, KlarnaRateLimited) and exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        body = error_body(code, exc.message, klarna=_klarna_details(exc))
        return status, body, headers
    if _is_routing_error(exc):  # Powertools' own: unknown route (404), method not allowed, ...
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return exc.status_code, error_body(code, str(exc.msg)), {}
    return 500, error_body("internal_error", "internal error"), {}


def _is_routing_error(exc: Exception) -> "TypeGuard[ServiceError]":
    """A Powertools ServiceError; it can only be raised where Powertools' resolver is loaded."""
    exceptions = sys.modules.get("aws_lambda_powertools.event_handler.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.ServiceError)


def _klarna_details(exc: KlarnaError) -> dict[str, Any]:
    klarna = {
        "http_status": exc.http_status,
        "error_code": exc.error_code,
        "error_messages": exc.error_messages or None,
        "correlation_id": exc.correlation_id,
    }
    return {k: v for k, v in klarna.items() if v is not None}


ErrorAnswer = tuple[int, dict[str, Any], dict[str, str]]


def error_answers(logger: Logger, metrics: Metrics) -> Callable[[Exception], ErrorAnswer]:
    """The one mapping, logged and counted: one log line and one metric per failure."""

    def answer(exc: Exception) -> ErrorAnswer:
        status, body, headers = error_response(exc)
        metrics.add_metric(name=f"Error_{body['error']['code']}", unit=MetricUnit.Count, value=1)
        fields: dict[str, Any] = {"http_status": status, "error_code": body["error"]["code"]}
        klarna_error = exc if isinstance(exc, KlarnaError) else exc.__cause__
        if isinstance(klarna_error, KlarnaError):
            fields.update(klarna_error.log_fields())
        if isinstance(klarna_error, KlarnaUrlRefused):
            metrics.add_metric(name="KlarnaUrlRefused", unit=MetricUnit.Count, value=1)
        if isinstance(exc, TrackerError):
            fields.update(exc.response_fields())
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR and not (
            isinstance(exc, (TrackerError, KlarnaError)) or _is_routing_error(exc)
        ):
            logger.exception("unexpected error", extra=fields)
        else:
            log = logger.error if status >= HTTPStatus.INTERNAL_SERVER_ERROR else logger.warning
            log(body["error"]["message"], extra={**fields, "details": body["error"].get("details")})
        return status, body, headers

    return answer


def proxy_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy answer with a JSON body, shaped as Powertools' resolver shapes one."""
    values = {name: [value] for name, value in (headers or {}).items()}
    return {
        "statusCode": status,
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
        "multiValueHeaders": {**values, "Content-Type": ["application/json"]},
    }


__all__ = ["ErrorAnswer", "error_answers", "error_body", "error_response", "proxy_answer"]
