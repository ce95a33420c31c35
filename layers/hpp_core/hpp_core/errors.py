"""The tracker's failures, each carrying the HTTP answer it deserves.

Every error knows its status code and a stable `code`; `http.error_response` is the one place that turns
any exception into a response. Messages are written for the caller and never include secrets or tokens.
"""


class TrackerError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class BadRequest(TrackerError):
    status_code = 400
    code = "bad_request"


class Forbidden(TrackerError):
    status_code = 403
    code = "forbidden"


class NotFound(TrackerError):
    status_code = 404
    code = "not_found"


class Conflict(TrackerError):
    status_code = 409
    code = "conflict"


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
