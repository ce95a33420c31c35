"""The tracker's failures, each carrying the HTTP answer it deserves.

Every error knows its status code and a stable `code`; `http.error_response` is the one place that turns
any exception into a response. Messages are written for the caller and never include secrets or tokens.
An error raised `from` a KlarnaError also shows Klarna's details (status, error code, correlation id).
"""

from typing import Any


class TrackerError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def response_fields(self) -> dict[str, Any]:
        """Extra fields of the error body (and of its log line), beyond code, message and details."""
        return {}

    def response_headers(self) -> dict[str, str]:
        """Extra headers of the answer (e.g. Retry-After)."""
        return {}


class BadRequest(TrackerError):
    status_code = 400
    code = "bad_request"


class Forbidden(TrackerError):
    status_code = 403
    code = "forbidden"


class NotFound(TrackerError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(TrackerError):
    status_code = 405
    code = "method_not_allowed"


class Conflict(TrackerError):
    status_code = 409
    code = "conflict"


class RequestInProgress(Conflict):
    """A create with the same Idempotency-Key is still running: retry once it has answered."""

    code = "request_in_progress"


class IdempotencyKeyReused(TrackerError):
    """The Idempotency-Key was used before with another body: the body is not the same request."""

    status_code = 422
    code = "idempotency_key_reused"


class PayloadTooLarge(TrackerError):
    status_code = 413
    code = "payload_too_large"


class DependencyError(TrackerError):
    """A dependency failed: the caller should retry later."""

    status_code = 502
    code = "bad_gateway"


class DependencyTimeout(DependencyError):
    status_code = 504
    code = "gateway_timeout"


class StorageUnavailable(DependencyError):
    status_code = 503
    code = "storage_unavailable"


class SessionNotTracked(StorageUnavailable):
    """Klarna created the session but the tracker could not store it: the caller must learn its id."""

    code = "session_not_tracked"

    def __init__(self, message: str, *, session_id: str, session_url: str | None) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.session_url = session_url

    def response_fields(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "session_url": self.session_url}


class UnknownSessionBudgetSpent(TrackerError):
    """This minute's Klarna reads for callbacks naming a session the table does not have are used up:
    a genuine Klarna callback is retried (503 + Retry-After), a forged one costs no Klarna read."""

    status_code = 503
    code = "unknown_session_budget_spent"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class Misconfigured(TrackerError):
    """The deployment is missing something only its operator can fix (the message says what)."""

    status_code = 500
    code = "misconfigured"
