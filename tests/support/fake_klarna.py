"""A fake of Klarna's Hosted Payment Page API v1, served over real HTTP on 127.0.0.1.

Integration tests point the code under test at `FakeKlarna.base_url` instead of Klarna, seed or move
sessions through the test-facing methods, and script faults (5xx, 429, garbage bodies, slow answers,
dropped connections) to exercise retries and timeouts. Only the standard library is used so the fake
cannot share a bug with the client code through a common dependency.

Behaviour follows shared/klarna-hpp.md: Basic auth, Create (201), Read (200; 404 when unknown or
expired), Disable (204; 400 when COMPLETED; 404 when unknown or expired), the generic Klarna error body
and timestamps such as `2019-05-13T14:54:04.675Z`.

    with FakeKlarna(username="PK1_user", password="pw") as klarna:
        klarna.add_session(status="IN_PROGRESS")
        klarna.fail_next("GET", "/hpp/v1/sessions/", status=503)
        ...  # call the code under test with base_url=klarna.base_url
"""

import base64
import binascii
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

from local.common.httpserver import HttpServer, Request, Response
from local.common.lifecycle import Startable

SESSIONS_PATH = "/hpp/v1/sessions"
DEFAULT_SESSION_LIFETIME = timedelta(hours=47)  # KP session lives ~48 h; HPP expires 1 h before it
DEFAULT_USERNAME = "PK00000_fake"
DEFAULT_PASSWORD = "fake-password"

# Klarna does not document the error_code for disabling a COMPLETED session; clients must not rely on it.
DISABLE_COMPLETED_ERROR_CODE = "INVALID_OPERATION"

PLACE_ORDER_MODES = frozenset({"NONE", "PLACE_ORDER", "CAPTURE_ORDER"})

# Stored with a session but not part of what Read Session returns.
PRIVATE_SESSION_KEYS = frozenset({"merchant_urls", "options", "payment_session_url", "profile_id"})

type Body = bytes | str | Mapping[str, Any] | list[Any] | None

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


def format_timestamp(moment: datetime) -> str:
    """Klarna's form: UTC, milliseconds, `Z` (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def ratelimit_headers(
    limit: int = 5, remaining: int = 0, reset: int = 1, retry_after: int | None = None
) -> dict[str, str]:
    """Headers Klarna documents on a 429; `Retry-After` is not documented, so only added on request."""
    headers = {
        "X-Ratelimit-Limit": str(limit),
        "X-Ratelimit-Remaining": str(remaining),
        "X-Ratelimit-Reset": str(reset),
    }
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers


def klarna_error(error_code: str, *messages: str) -> dict[str, Any]:
    """Klarna's generic error body, with a fresh correlation id as Klarna gives one per call."""
    return {
        "error_code": error_code,
        "error_messages": list(messages) or [error_code],
        "correlation_id": str(uuid.uuid4()),
    }


@dataclass
class RecordedRequest:
    """One request as the fake received it. Header names are lower-cased."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any  # parsed body, or None when empty or not JSON (see `body` for the raw bytes)
    received_at: datetime
    monotonic: float  # time.monotonic() at receipt, for measuring gaps between retries
    authorized: bool
    response_status: int | None = None  # the status sent; stays None for a dropped connection

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Fault:
    """A scripted answer that overrides normal handling for matching requests.

    `status=None` means: wait `delay`, then answer normally. `times=None` means until removed.
    """

    method: str | None
    path_prefix: str | None
    status: int | None
    body: Body
    headers: dict[str, str]
    delay: float
    times: int | None
    disconnect: bool
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> _Response:
    merged = {"Content-Type": "application/json"}
    merged.update(headers or {})
    return _Response(status, json.dumps(payload).encode(), merged)


def _error_response(status: int, error_code: str, *messages: str) -> _Response:
    return _json_response(status, klarna_error(error_code, *messages))


def _default_error_code(status: int) -> str:
    if status in _ERROR_CODES:
        return _ERROR_CODES[status]
    try:
        return HTTPStatus(status).name
    except ValueError:
        return "ERROR"


def _timestamp_value(value: datetime | str) -> str:
    # A string is kept as given so tests can feed odd-but-valid forms (no millis, offsets) to clients.
    return value if isinstance(value, str) else format_timestamp(value)


def _path_of(prefix: str | None) -> str | None:
    # Accept a full session_url as a prefix: tests often have that at hand rather than the path.
    if prefix is not None and prefix.startswith(("http://", "https://")):
        return urlsplit(prefix).path
    return prefix


def _create_request_problem(payload: object) -> str | None:  # noqa: PLR0911 - one return per rule reads best
    """Why Klarna would reject this Create Session body with 400, or None when it is acceptable."""
    if not isinstance(payload, dict):
        return "Request body must be a JSON object"
    url = payload.get("payment_session_url")
    if not isinstance(url, str) or not url:
        return "Missing required field: payment_session_url"
    # Klarna needs an existing KP session (or KCO order) URL here, not any URL.
    if not url.startswith(("http://", "https://")) or not (
        "/payments/v1/sessions/" in url or "/checkout/v3/orders/" in url
    ):
        return "Bad value: payment_session_url"
    merchant_urls = payload.get("merchant_urls")
    if merchant_urls is not None and not (
        isinstance(merchant_urls, dict) and all(isinstance(v, str) for v in merchant_urls.values())
    ):
        return "Bad value: merchant_urls"
    options = payload.get("options")
    if options is not None and not isinstance(options, dict):
        return "Bad value: options"
    if options and options.get("place_order_mode", "NONE") not in PLACE_ORDER_MODES:
        return "Bad value: options.place_order_mode"
    return None


class FakeKlarna(Startable):
    """Klarna HPP API v1 over real HTTP. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        *,
        session_lifetime: timedelta = DEFAULT_SESSION_LIFETIME,
        latency: float = 0.0,
        rate_limit_per_second: int | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.session_lifetime = session_lifetime
        self.latency = latency  # seconds added to every response
        self.rate_limit_per_second = rate_limit_per_second
        # Replaceable so tests can jump past expires_at without sleeping.
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.sessions: dict[str, dict[str, Any]] = {}
        self.errors: list[BaseException] = []  # unexpected exceptions inside the fake itself

        self._lock = threading.RLock()
        self._requests_changed = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._window_second = -1
        self._window_count = 0
        self._stopping = threading.Event()  # cuts scripted sleeps short on stop()
        self._server: HttpServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("FakeKlarna already started")
        self._stopping.clear()
        self._server = HttpServer(self._handle, name="fake-klarna", on_error=self.errors.append).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # before stopping the server, so handlers in a scripted delay return at once
        server.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeKlarna is not running")
        return self._server.url

    # -- helpers for tests ---------------------------------------------------------------------

    def auth_header(self) -> dict[str, str]:
        """The Authorization header the fake accepts."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def session_url(self, session_id: str) -> str:
        return f"{self.base_url}{SESSIONS_PATH}/{session_id}"

    def now(self) -> datetime:
        return self.clock()

    def add_session(
        self,
        session_id: str | None = None,
        status: str = "WAITING",
        updated_at: datetime | str | None = None,
        expires_at: datetime | str | None = None,
        authorization_token: str | None = None,
        order_id: str | None = None,
        klarna_reference: str | None = None,
        *,
        merchant_urls: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        payment_session_url: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Seed a session and return its stored dict (the live one: later changes show in it).

        `extra` fields (e.g. `customer`) are returned by Read Session as given.
        """
        now = self.now()
        session: dict[str, Any] = {
            "session_id": session_id or str(uuid.uuid4()),
            "status": status,
            "updated_at": _timestamp_value(updated_at or now),
            "expires_at": _timestamp_value(expires_at or now + self.session_lifetime),
            "authorization_token": authorization_token,
            "order_id": order_id,
            "klarna_reference": klarna_reference,
            "merchant_urls": dict(merchant_urls) if merchant_urls is not None else None,
            "options": dict(options) if options is not None else None,
            "payment_session_url": payment_session_url,
            **extra,
        }
        with self._lock:
            self.sessions[session["session_id"]] = session
        return session

    def set_status(
        self, session_id: str, status: str, updated_at: datetime | str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Move a session (as a consumer action would). A field given as None is removed."""
        with self._lock:
            session = self.sessions[session_id]
            session["status"] = status
            session["updated_at"] = _timestamp_value(updated_at or self.now())
            for name, value in fields.items():
                if value is None:
                    session.pop(name, None)
                else:
                    session[name] = value
            return session

    def expire(self, session_id: str) -> dict[str, Any]:
        """Put expires_at in the past, so Read and Disable answer 404."""
        with self._lock:
            session = self.sessions[session_id]
            session["expires_at"] = format_timestamp(self.now() - timedelta(seconds=1))
            return session

    def read_body(self, session_id: str) -> dict[str, Any]:
        """What Read Session returns for this session (ignoring expiry)."""
        with self._lock:
            session = dict(self.sessions[session_id])
        body = {key: session.get(key) for key in ("session_id", "status", "updated_at", "expires_at")}
        body.update(
            (key, value)
            for key, value in session.items()
            if key not in body and key not in PRIVATE_SESSION_KEYS and value is not None
        )
        return body

    def callback_body(self, session_id: str, event_id: str | None = None) -> dict[str, Any]:
        """The body Klarna POSTs to `merchant_urls.status_update` for the session's current state."""
        return {"event_id": event_id or str(uuid.uuid4()), "session": self.read_body(session_id)}

    def status_update_url(self, session_id: str) -> str | None:
        """The session's `status_update` URL with `{{session_id}}` filled in, as Klarna would call it."""
        with self._lock:
            urls = self.sessions[session_id].get("merchant_urls") or {}
        url = urls.get("status_update")
        return url.replace("{{session_id}}", session_id) if isinstance(url, str) else None

    # -- recorded requests ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot (copy) of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str | None = None, path_prefix: str | None = None) -> list[RecordedRequest]:
        prefix = _path_of(path_prefix)
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (prefix is None or r.path.startswith(prefix))
        ]

    def wait_for_requests(
        self, count: int, method: str | None = None, path_prefix: str | None = None, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Block until at least `count` matching requests arrived; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._requests_changed:
            while len(matching := self.requests_to(method, path_prefix)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {count} requests, got {len(matching)}")
                self._requests_changed.wait(remaining)
            return matching

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- scripted faults -----------------------------------------------------------------------

    def fail_next(
        self,
        method: str | None,
        path_prefix: str | None,
        status: int | None = 500,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        times: int | None = 1,
        *,
        disconnect: bool = False,
    ) -> Fault:
        """Override the answer to the next `times` matching requests (None/None matches everything).

        status=None with a delay: answer normally, but late (e.g. beyond the client's timeout).
        body=None with status >= 400: Klarna's error body. A bytes/str body is sent as is, labelled
        application/json unless `headers` says otherwise (a "JSON" response that does not parse).
        disconnect=True: close the connection without any answer.
        Faults are tried in the order added; the first match wins.
        """
        fault = Fault(
            method=method,
            path_prefix=_path_of(path_prefix),
            status=status,
            body=body,
            headers=dict(headers or {}),
            delay=delay,
            times=times,
            disconnect=disconnect,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_always(
        self,
        method: str | None,
        path_prefix: str | None,
        status: int | None = 500,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        *,
        disconnect: bool = False,
    ) -> Fault:
        """Like fail_next, but for every matching request until remove_fault() or clear_faults()."""
        return self.fail_next(method, path_prefix, status, body, headers, delay, None, disconnect=disconnect)

    def remove_fault(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    # -- server side ---------------------------------------------------------------------------

    def _handle(self, http_request: Request) -> Response | None:
        request = self._record(
            http_request.method, http_request.target, dict(http_request.headers), http_request.body
        )
        answer = self._answer(request)
        if answer is None:
            return None  # drops the connection without answering
        request.response_status = answer.status  # before it is sent: the client may look right after
        headers = {"Klarna-Correlation-Id": str(uuid.uuid4()), **answer.headers}
        return Response(answer.status, answer.body, list(headers.items()))

    def _record(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> RecordedRequest:
        parts = urlsplit(raw_path)
        lowered = {name.lower(): value for name, value in headers.items()}
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        request = RecordedRequest(
            method=method.upper(),
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=lowered,
            body=body,
            json=parsed,
            received_at=datetime.now(UTC),
            monotonic=time.monotonic(),
            authorized=self._authorized(lowered.get("authorization")),
        )
        with self._requests_changed:
            self._requests.append(request)
            self._requests_changed.notify_all()
        return request

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _answer(self, request: RecordedRequest) -> _Response | None:
        """The response to send, or None to drop the connection without answering."""
        try:
            return self._answer_unguarded(request)
        except Exception as error:  # a bug in the fake must show in `errors`, not hang the client
            self.errors.append(error)
            return _error_response(500, "INTERNAL_SERVER_ERROR", f"fake failed: {error!r}")

    def _answer_unguarded(self, request: RecordedRequest) -> _Response | None:
        fault = self._take_fault(request.method, request.path)
        delay = self.latency + (fault.delay if fault else 0.0)
        # Event.wait, not sleep: stop() must not wait for scripted delays to run out.
        if (delay > 0 and self._stopping.wait(delay)) or self._stopping.is_set():
            return None
        if fault is not None:
            if fault.disconnect:
                return None
            if fault.status is not None:
                return self._fault_response(fault.status, fault)
        if not request.authorized:
            return _error_response(401, "UNAUTHORIZED", "Missing or invalid credentials")
        # Klarna limits per merchant, so only authenticated calls count.
        return self._rate_limited() or self._route(request)

    @staticmethod
    def _fault_response(status: int, fault: Fault) -> _Response:
        headers = dict(fault.headers)
        body = fault.body
        if body is None:
            if status >= HTTPStatus.BAD_REQUEST:
                return _json_response(status, klarna_error(_default_error_code(status)), headers)
            return _Response(status, b"", headers)
        if isinstance(body, bytes | str):
            raw = body.encode() if isinstance(body, str) else body
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
            return _Response(status, raw, headers)
        return _json_response(status, body, headers)

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        return bool(sep) and username == self.username and password == self.password

    def _rate_limited(self) -> _Response | None:
        limit = self.rate_limit_per_second
        if limit is None:
            return None
        now = time.monotonic()
        second = math.floor(now)
        with self._lock:
            if second != self._window_second:
                self._window_second, self._window_count = second, 0
            self._window_count += 1
            if self._window_count <= limit:
                return None
        reset = max(1, math.ceil(second + 1 - now))
        return _json_response(
            429,
            klarna_error("TOO_MANY_REQUESTS", "Rate limit exceeded"),
            ratelimit_headers(limit=limit, remaining=0, reset=reset),
        )

    def _route(self, request: RecordedRequest) -> _Response:
        path = request.path.rstrip("/")
        if path == SESSIONS_PATH:
            handlers: dict[str, Callable[[], _Response]] = {"POST": lambda: self._create(request)}
        elif path.startswith(SESSIONS_PATH + "/") and "/" not in path[len(SESSIONS_PATH) + 1 :]:
            session_id = unquote(path[len(SESSIONS_PATH) + 1 :])
            handlers = {"GET": lambda: self._read(session_id), "DELETE": lambda: self._disable(session_id)}
        else:
            return _error_response(404, "NOT_FOUND", "No such resource")
        handler = handlers.get(request.method)
        if handler is None:
            return _error_response(405, "METHOD_NOT_ALLOWED", f"{request.method} not allowed here")
        return handler()

    def _create(self, request: RecordedRequest) -> _Response:
        payload = request.json
        problem = _create_request_problem(payload)
        if problem is not None:
            return _error_response(400, "BAD_VALUE", problem)
        session = self.add_session(
            merchant_urls=payload.get("merchant_urls"),
            options=payload.get("options"),
            payment_session_url=payload["payment_session_url"],
        )
        if isinstance(payload.get("profile_id"), str):
            session["profile_id"] = payload["profile_id"]
        session_id = session["session_id"]
        session_url = self.session_url(session_id)
        pay_url = f"{self.base_url}/pay/{session_id}"
        return _json_response(
            201,
            {
                "session_id": session_id,
                "session_url": session_url,
                "redirect_url": pay_url,
                "qr_code_url": f"{pay_url}/qr",
                "distribution_url": f"{session_url}/distribution",
                "manual_identification_check_url": f"{session_url}/manual-id-check",
                "distribution_module": {
                    "token": str(uuid.uuid4()),
                    "standalone_url": f"{pay_url}/distribution-module",
                    "generation_url": f"{session_url}/distribution-module",
                },
                "expires_at": session["expires_at"],
            },
        )

    def _live_session(self, session_id: str) -> dict[str, Any] | None:
        """The stored session, or None when unknown or expired (Klarna answers both with 404)."""
        session = self.sessions.get(session_id)
        if session is None:
            return None
        try:
            expired = self.now() > parse_timestamp(session["expires_at"])
        except (KeyError, TypeError, ValueError):
            expired = False  # a test seeded something unparsable: treat as never expiring
        return None if expired else session

    def _read(self, session_id: str) -> _Response:
        with self._lock:
            if self._live_session(session_id) is None:
                return _error_response(404, "NOT_FOUND", "Session not found or expired")
            return _json_response(200, self.read_body(session_id))

    def _disable(self, session_id: str) -> _Response:
        with self._lock:
            session = self._live_session(session_id)
            if session is None:
                return _error_response(404, "NOT_FOUND", "Session not found or expired")
            if session["status"] == "COMPLETED":
                return _error_response(
                    400, DISABLE_COMPLETED_ERROR_CODE, "The session is completed and cannot be disabled"
                )
            self.set_status(session_id, "DISABLED")
        return _Response(204)
