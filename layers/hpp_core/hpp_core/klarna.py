"""Klarna HPP API client: Create, Read, Disable and Distribute Session.

HTTP Basic with the merchant's credentials from Secrets Manager, one total timeout per call, and every
non-2xx answer raised as a `KlarnaError` subclass carrying Klarna's `error_code`, `error_messages` and
`correlation_id`, which is what Klarna support asks for. Idempotent calls (Read, Disable) can be retried
with a `RetryPolicy`; Create and Distribute never are (a retry could create a second session or send the
consumer a second message).

A session's calls go to the URLs Klarna returned for it (`session_url`, `distribution_url`: Klarna says
their structure may change); only a session with none on file gets the documented form. Every request,
whatever its URL, is checked first: it goes out (with the credentials) only if its scheme, host and port
are the configured KLARNA_API_URL's, else `KlarnaUrlRefused` is raised and nothing is sent.
"""

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import urllib3
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpp_core.errors import DependencyError
from hpp_core.models import KlarnaCreated, KlarnaCreatedSession, KlarnaSession, describe_validation_error
from hpp_core.tracing import klarna_call

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

USER_AGENT = "hpp-tracker/1.0"
SESSIONS_PATH = "/hpp/v1/sessions"


class KlarnaCredentials(BaseModel):
    """The secret's JSON: `{"username": "...", "password": "..."}` (Klarna's API key pair)."""

    # Built when first used: the secret is read on the first Klarna call, which most callbacks never make.
    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True, defer_build=True)

    username: str = Field(min_length=1)
    password: str = Field(min_length=1, repr=False)

    def basic_auth_header(self) -> str:
        return urllib3.util.make_headers(basic_auth=f"{self.username}:{self.password}")["authorization"]


@dataclass
class KlarnaError(Exception):
    """Klarna answered with an error or could not be reached."""

    message: str
    http_status: int | None = None
    error_code: str | None = None
    error_messages: list[str] = field(default_factory=list)
    correlation_id: str | None = None

    def __str__(self) -> str:
        parts = [self.message]
        if self.http_status is not None:
            parts.append(f"http_status={self.http_status}")
        if self.error_code:
            parts.append(f"error_code={self.error_code}")
        if self.correlation_id:
            parts.append(f"correlation_id={self.correlation_id}")
        return " ".join(parts)

    def log_fields(self) -> dict[str, Any]:
        return {
            "klarna_error": type(self).__name__,
            "klarna_http_status": self.http_status,
            "klarna_error_code": self.error_code,
            "klarna_correlation_id": self.correlation_id,
        }


class KlarnaNotFound(KlarnaError):
    """404: Klarna does not know the session, or it has expired (Klarna does not say which)."""


class KlarnaRejected(KlarnaError):
    """A 4xx other than 401/403/404/429: the request broke one of Klarna's rules."""


class KlarnaAuthFailed(KlarnaError):
    """401/403: the tracker's Klarna credentials are wrong; retrying will not help."""


@dataclass
class KlarnaRateLimited(KlarnaError):
    """429: over Klarna's rate limit; `retry_after` seconds from Retry-After or X-Ratelimit-Reset."""

    retry_after: float | None = None


class KlarnaUnavailable(KlarnaError):
    """5xx or connection failure: worth retrying later."""


class KlarnaTimeout(KlarnaUnavailable):
    """No answer within the time budget (Klarna may still have acted on the request)."""


class KlarnaBadResponse(KlarnaError):
    """A 2xx whose body is not what Klarna documents."""


@dataclass
class KlarnaUrlRefused(KlarnaError):
    """A URL (one Klarna returned for a session) not on the configured Klarna API's scheme, host and
    port: nothing was sent, so the credentials never left for it."""

    refused_origin: str = ""

    def log_fields(self) -> dict[str, Any]:
        return {**super().log_fields(), "refused_origin": self.refused_origin}


@dataclass(frozen=True)
class KlarnaResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from Retry-After (seconds) or Klarna's X-Ratelimit-Reset (seconds)."""
    for name in ("Retry-After", "X-Ratelimit-Reset"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if seconds >= 0:
            return min(seconds, 3600.0)
    return None


# Statuses with an error type of their own; any other 4xx is KlarnaRejected, anything else unavailable.
_ERRORS_BY_STATUS: dict[int, tuple[type[KlarnaError], str]] = {
    HTTPStatus.NOT_FOUND: (KlarnaNotFound, "Klarna {}: session not found or expired"),
    HTTPStatus.UNAUTHORIZED: (KlarnaAuthFailed, "Klarna {}: credentials refused"),
    HTTPStatus.FORBIDDEN: (KlarnaAuthFailed, "Klarna {}: credentials refused"),
    HTTPStatus.TOO_MANY_REQUESTS: (KlarnaRateLimited, "Klarna {}: rate limited"),
}


def _error_from_response(response: KlarnaResponse, operation: str) -> KlarnaError:
    """The typed error for a non-2xx answer, with Klarna's error body when it sent a readable one."""
    kind, message = _error_kind(response.status)
    error = kind(message.format(operation), http_status=response.status, **_error_details(response))
    if isinstance(error, KlarnaRateLimited):
        error.retry_after = retry_after_seconds(response.headers)
    return error


def _error_kind(status: int) -> tuple[type[KlarnaError], str]:
    if status in _ERRORS_BY_STATUS:
        return _ERRORS_BY_STATUS[status]
    if HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR:
        return KlarnaRejected, "Klarna {} failed"
    return KlarnaUnavailable, "Klarna {} failed"


def _error_details(response: KlarnaResponse) -> dict[str, Any]:
    """Klarna's error_code, error_messages and correlation_id, bounded in size; empty if unreadable."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        payload = {}
    messages = payload.get("error_messages")
    if not isinstance(messages, list):
        # Klarna's general error format also knows a single `error_message` string.
        message = payload.get("error_message")
        messages = [message] if isinstance(message, str) and message else []
    return {
        "error_code": str(payload["error_code"])[:200] if payload.get("error_code") else None,
        "error_messages": [str(m)[:500] for m in messages][:10],
        "correlation_id": str(payload["correlation_id"])[:200] if payload.get("correlation_id") else None,
    }


# -- retries for idempotent calls --------------------------------------------------------------------

RetryHook = Callable[[KlarnaError, int, float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How an idempotent Klarna call (Read, Disable) is retried.

    Retried: 429, 5xx, connection failures and timeouts (`KlarnaRateLimited`, `KlarnaUnavailable`);
    anything else is an answer, not a hiccup. Between attempts the wait is exponential backoff with full
    jitter, uniform in [0, min(max_delay, base * 2**(attempt - 1))], added to Klarna's Retry-After /
    X-Ratelimit-Reset when it sent one (never retry before Klarna said so). Everything happens within
    the budget (from the call's start) and the absolute `deadline` (on `clock`, e.g. the Lambda's end):
    each attempt's timeout is min(the client's timeout, time left), and no retry is started that could
    not get `min_attempt_seconds` after its wait.
    """

    max_attempts: int = 1
    budget_seconds: float | None = None
    base_delay_seconds: float = 0.1
    max_delay_seconds: float = 2.0
    min_attempt_seconds: float = 0.2
    deadline: float | None = None
    # Injectable so the loop is tested without waiting; `jitter` returns a float in [0, 1).
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)
    # Called before each wait with (the error, the attempt that failed, the wait): for logs and metrics.
    on_retry: RetryHook | None = field(default=None, compare=False, repr=False)

    def within(self, seconds: float) -> "RetryPolicy":
        """The same policy, also bounded by `seconds` from now (e.g. the Lambda's remaining time)."""
        return replace(self, deadline=self.clock() + seconds)

    def ends_at(self) -> float | None:
        """When a call started now must be over (on `clock`): the budget or the deadline, if any."""
        ends = [self.deadline]
        if self.budget_seconds is not None:
            ends.append(self.clock() + self.budget_seconds)
        return min((moment for moment in ends if moment is not None), default=None)

    def attempt_timeout(self, timeout_seconds: float, end: float | None) -> float:
        """The client's timeout, cut to the time left; never under `min_attempt_seconds`, so the first
        attempt always runs, however little time is left: a caller gets an answer."""
        if end is None:
            return timeout_seconds
        return max(min(timeout_seconds, end - self.clock()), self.min_attempt_seconds)

    def wait_before_retry(self, attempt: int, error: KlarnaError, end: float | None) -> float | None:
        """The wait before retrying after attempt number `attempt` failed with `error`; None when no
        retry is due: the attempts are used up, or after the wait no attempt would get its minimum."""
        if attempt >= self.max_attempts:
            return None
        delay = self.delay_after(attempt, error)
        if end is not None and self.clock() + delay + self.min_attempt_seconds > end:
            return None
        return delay

    def delay_after(self, attempt: int, error: KlarnaError) -> float:
        cap = min(self.max_delay_seconds, self.base_delay_seconds * 2.0 ** (attempt - 1))
        delay = self.jitter() * cap
        if isinstance(error, KlarnaRateLimited) and error.retry_after is not None:
            delay += error.retry_after
        return delay


NO_RETRY = RetryPolicy()
"""One attempt with the client's own timeout: the callback and the poller decide about retries themselves."""


def call_with_retry[T](attempt: Callable[[float], T], *, timeout_seconds: float, policy: RetryPolicy) -> T:
    """Run `attempt(timeout)` until it returns, fails for good, or the policy's attempts or time run out.

    The last error is raised as it came, so the caller's mapping (429 -> Retry-After, ...) still applies.
    """
    end = policy.ends_at()
    number = 0
    while True:
        number += 1
        try:
            return attempt(policy.attempt_timeout(timeout_seconds, end))
        except (KlarnaRateLimited, KlarnaUnavailable) as error:
            delay = policy.wait_before_retry(number, error, end)
            if delay is None:
                raise
            if policy.on_retry is not None:
                policy.on_retry(error, number, delay)
            policy.sleep(delay)


CredentialsProvider = Callable[[], KlarnaCredentials]


def origin(url: str) -> str:
    """`scheme://host:port` of a URL (the port spelled out, lower case), or "" when it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    except ValueError:
        return ""
    if not parts.hostname or port is None:
        return ""
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}:{port}"


class KlarnaClient:
    def __init__(
        self,
        base_url: str,
        credentials: CredentialsProvider,
        *,
        timeout_seconds: float,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._origin = origin(self._base_url)
        self._credentials = credentials
        self._timeout_seconds = timeout_seconds
        # Connections are reused across invocations of a warm Lambda; urllib3 retries are off because
        # each operation decides for itself what is safe to retry.
        self._pool = pool or urllib3.PoolManager(maxsize=16, retries=False)

    def session_url(self, session_id: str) -> str:
        """The documented form of a session's URL: only for a session tracked without the one Klarna
        returned (created elsewhere)."""
        return f"{self._base_url}{SESSIONS_PATH}/{quote(session_id, safe='')}"

    def read_session(
        self, session_id: str, *, url: str | None = None, retry: RetryPolicy = NO_RETRY
    ) -> KlarnaSession:
        """Read Session at `url` (the session's `session_url`), or the documented form without one."""
        target = url or self.session_url(session_id)
        response = call_with_retry(
            lambda timeout: self.request(
                "GET", target, operation="read session", timeout_seconds=timeout, session_id=session_id
            ),
            timeout_seconds=self._timeout_seconds,
            policy=retry,
        )
        session = parse_session(response, operation="read session")
        if session.session_id != session_id:
            raise KlarnaBadResponse(
                "Klarna read session answered for a different session", http_status=response.status
            )
        return session

    def create_session(
        self, body: Mapping[str, Any], *, timeout_seconds: float | None = None
    ) -> KlarnaCreated:
        """Create Session, exactly once: it is not idempotent, so it is never retried here.

        A failure without an answer (timeout, dropped connection) or an unreadable 2xx leaves it unknown
        whether Klarna created a session; the error says so, for the caller to decide.
        """
        operation = "create session"
        response = self._post_once(
            f"{self._base_url}{SESSIONS_PATH}",
            body,
            operation=operation,
            timeout_seconds=timeout_seconds,
            unanswered="Klarna may or may not have created the session",
        )
        try:
            payload = response.json()
            return KlarnaCreated(KlarnaCreatedSession.model_validate(payload), payload)
        except ValueError as exc:
            details = describe_validation_error(exc) if isinstance(exc, ValidationError) else ["not JSON"]
            raise KlarnaBadResponse(
                f"Klarna {operation}: unreadable answer ({'; '.join(details)}); Klarna answered "
                f"{response.status}, so it has probably created a session",
                http_status=response.status,
            ) from None

    def disable_session(
        self, session_id: str, *, url: str | None = None, retry: RetryPolicy = NO_RETRY
    ) -> None:
        """Disable Session (204) at `url` (the session's `session_url`), or the documented form without
        one. Klarna: 400 when the session is COMPLETED, 404 when unknown or expired."""
        target = url or self.session_url(session_id)
        call_with_retry(
            lambda timeout: self.request(
                "DELETE", target, operation="disable session", timeout_seconds=timeout, session_id=session_id
            ),
            timeout_seconds=self._timeout_seconds,
            policy=retry,
        )

    def distribute_session(
        self,
        session_id: str,
        body: Mapping[str, Any],
        *,
        url: str | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        """Send the consumer the payment link (`POST distribution_url`, 201 or 204), exactly once: a
        retry could send a second e-mail or SMS. Without a `distribution_url` on file, the documented
        form. The body holds contact data: it is sent, never logged."""
        self._post_once(
            url or f"{self.session_url(session_id)}/distribution",
            body,
            operation="distribute session",
            timeout_seconds=timeout_seconds,
            unanswered="Klarna may or may not have sent the link",
            session_id=session_id,
        )

    def _post_once(
        self,
        url: str,
        body: Mapping[str, Any],
        *,
        operation: str,
        timeout_seconds: float | None,
        unanswered: str,
        session_id: str | None = None,
    ) -> KlarnaResponse:
        """A POST that must not be repeated; a failure without an answer says what may have happened."""
        try:
            return self.request(
                "POST",
                url,
                operation=operation,
                body=body,
                timeout_seconds=timeout_seconds,
                session_id=session_id,
            )
        except KlarnaUnavailable as error:
            if error.http_status is None:
                error.message += f"; {unanswered}"
            raise

    def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        body: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
        session_id: str | None = None,
    ) -> KlarnaResponse:
        """One HTTP call; raises a KlarnaError for anything but a 2xx, and KlarnaUrlRefused (nothing
        sent) for a URL that is not on the configured Klarna API's scheme, host and port. Traced as one
        subsegment annotated with `session_id` and the status (hpp_core.tracing: never a URL or body)."""
        self._check_url(url, operation)
        headers = {
            "Authorization": self._credentials().basic_auth_header(),
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        encoded = None
        if body is not None:
            encoded = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        timeout = timeout_seconds or self._timeout_seconds
        try:
            with klarna_call(operation, session_id=session_id) as traced_status:
                raw = self._pool.request(
                    method,
                    url,
                    body=encoded,
                    headers=headers,
                    timeout=urllib3.Timeout(total=timeout),
                    redirect=False,
                    retries=False,
                )
                traced_status(raw.status)
        except (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError) as exc:
            if _is_timeout(exc):
                raise KlarnaTimeout(f"Klarna {operation}: no answer within {timeout:g}s") from None
            raise KlarnaUnavailable(f"Klarna {operation}: connection failed") from None
        except urllib3.exceptions.HTTPError:
            raise KlarnaUnavailable(f"Klarna {operation}: connection failed") from None
        response = KlarnaResponse(status=raw.status, headers=raw.headers, body=raw.data)
        if not HTTPStatus.OK <= raw.status < HTTPStatus.MULTIPLE_CHOICES:
            raise _error_from_response(response, operation)
        return response

    def _check_url(self, url: str, operation: str) -> None:
        refused = origin(url)
        if refused and refused == self._origin and "@" not in urlsplit(url).netloc:
            return
        raise KlarnaUrlRefused(
            f"Klarna {operation}: refused to send the credentials to {refused or 'an unreadable URL'}: "
            f"the session's URL is not on KLARNA_API_URL ({self._origin})",
            refused_origin=refused,
        )


def _is_timeout(exc: BaseException) -> bool:
    """A request that may have reached Klarna and gone unanswered (not a refused connection)."""
    reason = getattr(exc, "reason", None) or exc
    # urllib3 files a refused connection under its timeout errors; nothing was sent, so it is not one.
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return False
    return isinstance(reason, urllib3.exceptions.TimeoutError)


def parse_session(response: KlarnaResponse, *, operation: str) -> KlarnaSession:
    try:
        return KlarnaSession.model_validate(response.json())
    except ValueError as exc:
        details = describe_validation_error(exc) if isinstance(exc, ValidationError) else ["not JSON"]
        raise KlarnaBadResponse(
            f"Klarna {operation}: unreadable answer ({'; '.join(details)})", http_status=response.status
        ) from None


def secrets_manager_credentials(
    secret_arn: str, *, max_age_seconds: int, boto_config: Config | None = None
) -> CredentialsProvider:
    """Credentials from Secrets Manager through Powertools parameters (cached for `max_age_seconds`), its
    client made on first use with `boto_config` (timeouts and retries).

    Powertools parameters is imported on that first use too: its package loads every provider (AppConfig
    included), and a callback on the normal path never calls Klarna."""
    provider: SecretsProvider | None = None

    def provide() -> KlarnaCredentials:
        nonlocal provider
        from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415 - see above
        from aws_lambda_powertools.utilities.parameters.exceptions import (  # noqa: PLC0415
            GetParameterError,
            TransformParameterError,
        )

        if provider is None:
            provider = SecretsProvider(boto_config=boto_config)
        try:
            secret = provider.get(secret_arn, transform="json", max_age=max_age_seconds)
        except TransformParameterError:
            raise KlarnaAuthFailed("Klarna credentials secret is not JSON") from None
        except GetParameterError:
            raise DependencyError("Klarna credentials could not be read from Secrets Manager") from None
        try:
            return KlarnaCredentials.model_validate(secret)
        except ValidationError:
            raise KlarnaAuthFailed(
                "Klarna credentials secret must be JSON with non-empty username and password"
            ) from None

    return provide
