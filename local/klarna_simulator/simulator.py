"""The Klarna HPP simulator: Klarna's HPP API v1 over real HTTP, consumers that use the sessions, and
callbacks delivered the way Klarna delivers them (see ../shared/klarna-hpp.md and the README).

    with KlarnaSimulator(SimulatorConfig(seed=7, chaos=chaos_profile("default"))) as klarna:
        ...  # point the tracker at klarna.url with klarna.config.username / password
        truth = klarna.truth()  # what really happened to every session

Klarna's API: Create Session (`POST /hpp/v1/sessions`, 201), Read Session (`GET session_url`, 200) and
Disable Session (`DELETE session_url`, 204), HTTP Basic auth, errors as
`{"error_code", "error_messages", "correlation_id"}`, 404 once a session has expired, per-second rate
limits answered with 429 and `X-Ratelimit-Limit/Remaining/Reset`. The other URLs a create returns work
too: `redirect_url` is a page where a person can play the consumer, `qr_code_url` an image,
`distribution_url` accepts distribution requests.

The simulator's own routes, under `/_simulator/` (no auth; local only): `GET truth`, `GET truth/{id}`,
`GET config`, `POST sessions/{id}/status` (`{"status": "COMPLETED"}`: act as the consumer),
`POST sessions/{id}/expire` and `POST chaos` (`{"profile": "heavy", "set": {"callback_drop_rate": "0.5"}}`).
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import urllib3

from local.common.httpserver import HOST, HttpServer, Request, Response
from local.common.lifecycle import Startable
from local.klarna_simulator.chaos import ChaosProfile, chaos_profile
from local.klarna_simulator.clock import MonotonicClock, format_timestamp
from local.klarna_simulator.journeys import MERCHANT_DISABLE, Journey, JourneyModel, session_rng
from local.klarna_simulator.tasks import TaskScheduler

if TYPE_CHECKING:
    import random

_log = logging.getLogger("local.klarna")

SESSIONS_PATH = "/hpp/v1/sessions"
CONTROL_PATH = "/_simulator"
FINAL_STATUSES = frozenset({"COMPLETED", "CANCELLED", "DISABLED"})
PLACE_ORDER_MODES = frozenset({"NONE", "PLACE_ORDER", "CAPTURE_ORDER"})
DISTRIBUTION_METHODS = frozenset({"sms", "email", "token"})
# What a consumer can do on the page; the control API also accepts statuses Klarna may add later.
CONSUMER_ACTIONS = ("IN_PROGRESS", "FAILED", "BACK", "ERROR", "CANCELLED", "COMPLETED")
_STATUS_PATTERN = re.compile(r"^[A-Z][A-Z_]{0,39}$")
# Read Session fields Klarna returns; the rest of what is stored about a session stays private.
_READ_FIELDS = ("session_id", "status", "updated_at", "expires_at")
_COMPLETION_FIELDS = ("authorization_token", "order_id", "klarna_reference")
_REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True)
class SimulatorConfig:
    username: str = "PK_simulator_merchant"
    password: str = "simulator-password"  # a local fake, not a secret
    seed: int = 0
    # Klarna's HPP sessions live ~47 hours; locally expiry should happen while you watch.
    session_lifetime: float = 600.0
    journeys: str = "auto"  # "auto": each new session gets a seeded consumer journey; "manual": none
    think_time: tuple[float, float] = (0.5, 3.0)  # seconds between a consumer's steps
    journey_model: JourneyModel = field(default_factory=JourneyModel)
    chaos: ChaosProfile = field(default_factory=lambda: chaos_profile("none"))
    # Klarna waits 3 seconds for an answer, then retries "after a few seconds", 4 calls in all.
    callback_timeout: float = 3.0
    callback_attempts: int = 4
    callback_retry_delay: float = 5.0
    # Whether Klarna retries a 4xx is not documented; retrying is the harsher assumption for the tracker.
    retry_callbacks_on_4xx: bool = True
    # Whether Klarna calls back for a merchant's disable is not documented; by default it does not.
    callback_on_disable: bool = False
    # Requests per second per merchant: Klarna's production limits (playground: 5 and 50).
    create_rate_limit: int = 40
    other_rate_limit: int = 200
    # Where a MERCHANT_DISABLE step sends `DELETE` ("{session_id}" is filled in), e.g. the tracker's
    # DELETE /sessions/{session_id}; without one the merchant disables at Klarna's own API.
    merchant_disable_url: str | None = None
    workers: int = 16

    def __post_init__(self) -> None:
        if self.journeys not in ("auto", "manual"):
            raise ValueError(f"journeys must be 'auto' or 'manual', not {self.journeys!r}")
        if self.session_lifetime <= 0:
            raise ValueError("session_lifetime must be positive")
        if self.callback_attempts < 1:
            raise ValueError("callback_attempts must be at least 1")
        if not 0 <= self.think_time[0] <= self.think_time[1]:
            raise ValueError("think_time must be (min, max) with 0 <= min <= max")

    def describe(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "seed": self.seed,
            "session_lifetime": self.session_lifetime,
            "journeys": self.journeys,
            "think_time": list(self.think_time),
            "chaos": self.chaos.as_dict(),
            "callback_timeout": self.callback_timeout,
            "callback_attempts": self.callback_attempts,
            "callback_retry_delay": self.callback_retry_delay,
            "retry_callbacks_on_4xx": self.retry_callbacks_on_4xx,
            "callback_on_disable": self.callback_on_disable,
            "create_rate_limit": self.create_rate_limit,
            "other_rate_limit": self.other_rate_limit,
            "merchant_disable_url": self.merchant_disable_url,
        }


# ------------------------------------------------------------------------------------------ records


@dataclass
class Attempt:
    number: int
    at: str
    result: str  # "http_200", "http_503", "timeout", "connection_error"
    http_status: int | None
    empty_body: bool
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300  # noqa: PLR2004


@dataclass
class Delivery:
    copy: int  # 1, or 2 for a duplicate
    attempts: list[Attempt] = field(default_factory=list)
    outcome: str = "pending"  # "pending", "delivered", "gave_up"


@dataclass
class CallbackEvent:
    event_id: str
    status: str
    updated_at: str
    body: dict[str, Any]
    url: str | None  # status_update with {{session_id}} filled in; None when the session has none
    dropped: bool = False
    duplicated: bool = False
    delay: float = 0.0
    emptied: bool = False
    duplicate_gap: float = 0.0  # seconds between a duplicate and the first copy
    deliveries: list[Delivery] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        flags = {"dropped": self.dropped, "duplicated": self.duplicated, "delayed": self.delay > 0}
        flags["emptied"] = self.emptied
        chaos = [name for name, on in flags.items() if on]
        return {
            "event_id": self.event_id,
            "status": self.status,
            "updated_at": self.updated_at,
            "chaos": chaos,
            "delay_seconds": round(self.delay, 3),
            "url": _without_query(self.url),  # the query holds the tracker's per-session secret
            "deliveries": [
                {
                    "copy": delivery.copy,
                    "outcome": delivery.outcome,
                    "attempts": [attempt.__dict__ for attempt in delivery.attempts],
                }
                for delivery in self.deliveries
            ],
        }


@dataclass
class StatusChange:
    status: str
    updated_at: str
    source: str  # "consumer", "merchant_api" (Disable Session), "merchant" (journey step), "control"


@dataclass
class SimSession:
    session_id: str
    ordinal: int
    rng: random.Random
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    status: str
    place_order_mode: str
    merchant_urls: dict[str, str]
    options: dict[str, Any]
    payment_session_url: str
    profile_id: str | None
    journey: Journey | None
    authorization_token: str | None = None
    order_id: str | None = None
    klarna_reference: str | None = None
    history: list[StatusChange] = field(default_factory=list)
    callbacks: list[CallbackEvent] = field(default_factory=list)
    merchant_actions: list[dict[str, Any]] = field(default_factory=list)
    distributions: list[dict[str, Any]] = field(default_factory=list)
    journey_position: int = 0  # steps taken so far

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def expired(self, now: datetime) -> bool:
        return now > self.expires_at

    def read_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "status": self.status,
            "updated_at": format_timestamp(self.updated_at),
            "expires_at": format_timestamp(self.expires_at),
        }
        for name in _COMPLETION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body

    def final_status(self, now: datetime) -> str | None:
        """The status the tracker must end with: Klarna's final one, EXPIRED, or None while still open."""
        if self.is_final:
            return self.status
        return "EXPIRED" if self.expired(now) else None

    def truth(self, now: datetime) -> dict[str, Any]:
        return {
            **self.read_body(),
            "ordinal": self.ordinal,
            "place_order_mode": self.place_order_mode,
            "created_at": format_timestamp(self.created_at),
            "final_status": self.final_status(now),
            "journey": self.journey.as_dict() if self.journey else None,
            "history": [change.__dict__ for change in self.history],
            "callbacks": [event.as_dict() for event in self.callbacks],
            "merchant_actions": list(self.merchant_actions),
            "distributions": list(self.distributions),
        }


class _Rejected(Exception):
    """An error answer in Klarna's format (raised from deep in a route)."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


# ------------------------------------------------------------------------------------- simulator


class KlarnaSimulator(Startable):
    """Klarna HPP over real HTTP on 127.0.0.1. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = HOST,
        port: int = 0,
        merchant_disable: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or SimulatorConfig()
        # Changeable while running (set_chaos), e.g. to turn chaos up halfway through a test.
        self.chaos = self.config.chaos
        # Called with a session id by MERCHANT_DISABLE steps (e.g. to go through the tracker's API).
        self.merchant_disable = merchant_disable
        self._server = HttpServer(self._handle, host=host, port=port, name="klarna-simulator")
        self._clock = MonotonicClock()
        self._lock = threading.RLock()
        self._sessions: dict[str, SimSession] = {}
        self._ordinal = 0
        self._chaos_rng = session_rng(self.config.seed, -1)  # for reads: one stream for the whole run
        self._windows: dict[str, tuple[int, int]] = {}  # rate-limit class -> (second, count)
        self._reads: Counter[str] = Counter()
        self._tasks = TaskScheduler(workers=self.config.workers, name="klarna-sim")
        self._http = urllib3.PoolManager(num_pools=4, maxsize=self.config.workers, retries=False)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        self._tasks.start()
        self._server.start()
        _log.info(
            "Klarna simulator on %s (seed %s, chaos %s, journeys %s, sessions live %ss)",
            self.url,
            self.config.seed,
            self.chaos.name,
            self.config.journeys,
            self.config.session_lifetime,
        )
        return self

    def stop(self) -> None:
        self._tasks.stop()
        self._server.stop()
        self._http.clear()

    @property
    def url(self) -> str:
        return self._server.url

    # -- Python API --------------------------------------------------------------------------------

    def auth_header(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.config.username}:{self.config.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def set_chaos(self, chaos: ChaosProfile) -> None:
        """Use another chaos profile for callbacks and reads from now on."""
        self.chaos = chaos
        _log.info("chaos profile now %s", chaos.name)

    def session_ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def truth(self) -> dict[str, Any]:
        """Everything that really happened: each session's final status and every callback's fate."""
        now = self._clock.now()
        with self._lock:
            sessions = [session.truth(now) for session in self._sessions.values()]
            reads = dict(self._reads)
        return {
            "generated_at": format_timestamp(now),
            "config": {**self.config.describe(), "chaos": self.chaos.as_dict()},
            "settled": self._tasks.pending == 0,
            "pending_tasks": self._tasks.pending,
            "summary": _summary(sessions, reads),
            "sessions": sessions,
        }

    def session_truth(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            return self._sessions[session_id].truth(self._clock.now())

    def status_update_url(self, session_id: str) -> str | None:
        """The session's `merchant_urls.status_update` as the merchant sent it (the tracker's secret included:
        for local tests that call back the way Klarna does; the truth strips it)."""
        with self._lock:
            return self._sessions[session_id].merchant_urls.get("status_update")

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every journey step and callback delivery is done (abandoned sessions may be open)."""
        return self._tasks.wait_idle(timeout)

    def act(self, session_id: str, status: str, *, source: str = "control") -> dict[str, Any]:
        """Move a session as its consumer would (callbacks follow).

        KeyError for an unknown session; ValueError when it cannot change now (expired or final).
        """
        with self._lock:
            session = self._sessions[session_id]
        if not _STATUS_PATTERN.match(status):
            raise ValueError(f"not a status: {status!r}")
        self._change_status(session, status, source=source, callback=True)
        with self._lock:
            return session.read_body()

    def expire(self, session_id: str) -> dict[str, Any]:
        """Make a session expire now: Read and Disable answer 404 from here on."""
        with self._lock:
            session = self._sessions[session_id]
            session.expires_at = min(session.expires_at, self._clock.now() - timedelta(milliseconds=1))
            _log.info("session %s expired (on request)", _short(session_id))
            return session.read_body()

    # -- status changes ----------------------------------------------------------------------------

    def _change_status(self, session: SimSession, status: str, *, source: str, callback: bool) -> None:
        """Apply a status change and send its callback; ValueError when the session can no longer change."""
        with self._lock:
            now = self._clock.now()
            if session.expired(now):
                raise ValueError(f"session {session.session_id} has expired")
            if session.is_final:
                raise ValueError(f"session {session.session_id} is {session.status} (final)")
            session.updated_at = self._clock.after(session.updated_at)
            session.status = status
            if status == "COMPLETED":
                self._complete(session)
            session.history.append(StatusChange(status, format_timestamp(session.updated_at), source))
            event = self._callback_event(session) if callback else None
        _log.info("session %s → %s (%s)", _short(session.session_id), status, source)
        if event is not None:
            self._schedule_deliveries(session, event)

    def _complete(self, session: SimSession) -> None:
        rng = session.rng
        if session.place_order_mode == "NONE":
            session.authorization_token = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        else:
            session.order_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            session.klarna_reference = "".join(rng.choice(_REFERENCE_ALPHABET) for _ in range(8))

    # -- journeys ----------------------------------------------------------------------------------

    def _schedule_next_step(self, session: SimSession) -> None:
        journey = session.journey
        if journey is None or session.journey_position >= len(journey.steps):
            return
        step = journey.steps[session.journey_position]
        self._tasks.call_later(step.delay, partial(self._take_step, session))

    def _take_step(self, session: SimSession) -> None:
        journey = session.journey
        if journey is None:
            return
        with self._lock:
            step = journey.steps[session.journey_position]
            session.journey_position += 1
            now = self._clock.now()
            if session.expired(now) or session.is_final:
                _log.info(
                    "session %s: consumer step %s skipped (%s)",
                    _short(session.session_id),
                    step.action,
                    "expired" if session.expired(now) else session.status,
                )
                return
        if step.action == MERCHANT_DISABLE:
            self._merchant_disables(session)
        else:
            try:
                self._change_status(session, step.action, source="consumer", callback=True)
            except ValueError as why:  # expired or final in between
                _log.info("session %s: consumer step skipped: %s", _short(session.session_id), why)
                return
        self._schedule_next_step(session)

    def _merchant_disables(self, session: SimSession) -> None:
        session_id = session.session_id
        action: dict[str, Any] = {"action": "disable", "at": format_timestamp(self._clock.now())}
        if self.merchant_disable is not None:
            action["via"] = "hook"
            try:
                self.merchant_disable(session_id)
                action["result"] = "called"
            except Exception as error:
                action["result"] = f"failed: {type(error).__name__}"
                _log.warning("session %s: merchant disable hook failed: %r", _short(session_id), error)
        elif self.config.merchant_disable_url:
            url = self.config.merchant_disable_url.replace("{session_id}", session_id)
            action["via"] = _without_query(url)
            try:
                response = self._http.request("DELETE", url, timeout=urllib3.Timeout(total=10))
                action["result"] = f"http_{response.status}"
            except urllib3.exceptions.HTTPError as error:
                action["result"] = f"failed: {type(error).__name__}"
            _log.info("session %s: merchant DELETE → %s", _short(session_id), action["result"])
        else:
            action["via"] = "klarna_api"
            try:
                self._disable(session, source="merchant")
                action["result"] = "disabled"
            except _Rejected as rejected:
                action["result"] = rejected.error_code
        with self._lock:
            session.merchant_actions.append(action)

    def _disable(self, session: SimSession, *, source: str) -> None:
        with self._lock:
            if session.expired(self._clock.now()):
                raise _Rejected(404, "NOT_FOUND", "Session not found or expired")
            if session.status == "DISABLED":
                return  # disabling twice changes nothing
            if session.is_final:
                raise _Rejected(
                    400, "INVALID_OPERATION", f"The session is {session.status} and cannot be disabled"
                )
        self._change_status(session, "DISABLED", source=source, callback=self.config.callback_on_disable)

    # -- callbacks ---------------------------------------------------------------------------------

    def _callback_event(self, session: SimSession) -> CallbackEvent:
        """The callback for the session's current state, with this run's chaos decided up front."""
        rng, chaos = session.rng, self.chaos
        url = session.merchant_urls.get("status_update")
        body = session.read_body()
        event = CallbackEvent(
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            status=session.status,
            updated_at=body["updated_at"],
            body={"session": body},
            url=url.replace("{{session_id}}", session.session_id) if url else None,
        )
        event.body = {"event_id": event.event_id, "session": body}
        # Draw every decision every time, so one rate's value does not shift the others' streams.
        draws = [rng.random() for _ in range(4)]
        delay = rng.uniform(*chaos.callback_delay_seconds)
        event.dropped = draws[0] < chaos.callback_drop_rate
        event.duplicated = draws[1] < chaos.callback_duplicate_rate
        event.delay = delay if draws[2] < chaos.callback_delay_rate else 0.0
        event.emptied = draws[3] < chaos.callback_empty_rate
        event.duplicate_gap = rng.uniform(0.05, 1.0)
        session.callbacks.append(event)
        return event

    def _schedule_deliveries(self, session: SimSession, event: CallbackEvent) -> None:
        short = _short(session.session_id)
        if event.url is None:
            _log.info("session %s: no status_update URL, no callback", short)
            return
        if event.dropped:
            _log.info("session %s: callback %s dropped (chaos)", short, event.status)
            return
        copies = [Delivery(copy=1)] + ([Delivery(copy=2)] if event.duplicated else [])
        with self._lock:
            event.deliveries.extend(copies)
        for delivery in copies:
            # A duplicate follows shortly after, like a retry whose first answer was lost.
            extra = 0.0 if delivery.copy == 1 else event.duplicate_gap
            self._tasks.call_later(event.delay + extra, partial(self._attempt, session, event, delivery, 1))

    def _attempt(self, session: SimSession, event: CallbackEvent, delivery: Delivery, number: int) -> None:
        if self._tasks.stopping or event.url is None:
            return
        body = b"" if event.emptied else json.dumps(event.body).encode()
        started_at, started = format_timestamp(self._clock.now()), time.monotonic()
        status: int | None = None
        try:
            response = self._http.request(
                "POST",
                event.url,
                body=body,
                headers={"Content-Type": "application/json", "User-Agent": "Klarna-HPP-Simulator/1.0"},
                timeout=urllib3.Timeout(total=self.config.callback_timeout),
            )
            status = response.status
            result = f"http_{status}"
        except urllib3.exceptions.NewConnectionError:  # a subclass of TimeoutError in urllib3, for history
            result = "connection_error"
        except urllib3.exceptions.TimeoutError:
            result = "timeout"
        except urllib3.exceptions.HTTPError:
            result = "connection_error"
        attempt = Attempt(
            number=number,
            at=started_at,
            result=result,
            http_status=status,
            empty_body=not body,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        retry = not attempt.succeeded and number < self.config.callback_attempts
        if retry and status is not None and 400 <= status < 500 and not self.config.retry_callbacks_on_4xx:  # noqa: PLR2004
            retry = False
        with self._lock:
            delivery.attempts.append(attempt)
            if attempt.succeeded:
                delivery.outcome = "delivered"
            elif not retry:
                delivery.outcome = "gave_up"
        _log.info(
            "session %s: callback %s%s attempt %d → %s%s",
            _short(session.session_id),
            event.status,
            " (duplicate)" if delivery.copy > 1 else "",
            number,
            result,
            " (empty body)" if not body else "",
        )
        if retry:
            self._tasks.call_later(
                self.config.callback_retry_delay, partial(self._attempt, session, event, delivery, number + 1)
            )

    # -- HTTP --------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response | None:
        correlation_id = str(uuid.uuid4())
        try:
            response = self._route(request)
        except _Rejected as rejected:
            response = _error(rejected.status, rejected.error_code, rejected.message, correlation_id)
            if isinstance(rejected, _RateLimited):
                response.headers += [
                    ("X-Ratelimit-Limit", str(rejected.limit)),
                    ("X-Ratelimit-Remaining", "0"),
                    ("X-Ratelimit-Reset", str(rejected.reset)),
                ]
        if response is not None:
            response.headers.append(("Klarna-Correlation-Id", correlation_id))
        return response

    def _route(self, request: Request) -> Response | None:
        path = request.path.rstrip("/") or "/"
        if path.startswith(CONTROL_PATH + "/") or path == CONTROL_PATH:
            return self._control(request, path[len(CONTROL_PATH) :])
        if path.startswith("/pay/"):
            return self._consumer_page(request, path[len("/pay/") :])
        if path == SESSIONS_PATH:
            self._require_method(request, "POST")
            self._authenticate(request)
            self._rate_limit("create", self.config.create_rate_limit)
            return self._create(request)
        if path.startswith(SESSIONS_PATH + "/"):
            rest = path[len(SESSIONS_PATH) + 1 :].split("/")
            session_id = unquote(rest[0])
            if len(rest) == 1:
                self._require_method(request, "GET", "DELETE")
                self._authenticate(request)
                self._rate_limit("other", self.config.other_rate_limit)
                return (
                    self._read(session_id) if request.method == "GET" else self._disable_request(session_id)
                )
            if rest[1:] == ["distribution"]:
                self._require_method(request, "POST")
                self._authenticate(request)
                self._rate_limit("other", self.config.other_rate_limit)
                return self._distribute(session_id, request)
        raise _Rejected(404, "NOT_FOUND", "No such resource")

    @staticmethod
    def _require_method(request: Request, *allowed: str) -> None:
        if request.method not in allowed:
            raise _Rejected(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")

    def _authenticate(self, request: Request) -> None:
        header = request.header("Authorization") or ""
        if header.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            username, sep, password = decoded.partition(":")
            if sep and username == self.config.username and password == self.config.password:
                return
        raise _Rejected(401, "UNAUTHORIZED", "Missing or invalid credentials")

    def _rate_limit(self, kind: str, limit: int) -> None:
        """Klarna's per-merchant, per-second limits (only authenticated calls count)."""
        now = time.monotonic()
        second = math.floor(now)
        with self._lock:
            window, count = self._windows.get(kind, (second, 0))
            if window != second:
                window, count = second, 0
            count += 1
            self._windows[kind] = (window, count)
        if count > limit:
            raise _RateLimited(limit, max(1, math.ceil(second + 1 - now)))

    def _live(self, session_id: str) -> SimSession:
        """The session, or Klarna's 404 when it is unknown or expired (Klarna does not say which)."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or session.expired(self._clock.now()):
                raise _Rejected(404, "NOT_FOUND", "Session not found or expired")
            return session

    def _create(self, request: Request) -> Response:
        try:
            payload = request.json()
        except ValueError:
            raise _Rejected(400, "BAD_VALUE", "Request body is not valid JSON") from None
        _check_create_request(payload)
        options = dict(payload.get("options") or {})
        with self._lock:
            ordinal = self._ordinal
            self._ordinal += 1
            rng = session_rng(self.config.seed, ordinal)
            session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            journey = None
            if self.config.journeys == "auto":
                journey = self.config.journey_model.draw(rng, self.config.think_time)
            created = self._clock.now()
            session = SimSession(
                session_id=session_id,
                ordinal=ordinal,
                rng=rng,
                created_at=created,
                expires_at=created + timedelta(seconds=self.config.session_lifetime),
                updated_at=created,
                status="WAITING",
                place_order_mode=str(options.get("place_order_mode", "NONE")),
                merchant_urls=dict(payload.get("merchant_urls") or {}),
                options=options,
                payment_session_url=payload["payment_session_url"],
                profile_id=payload.get("profile_id"),
                journey=journey,
            )
            session.history.append(StatusChange("WAITING", format_timestamp(created), "create"))
            self._sessions[session_id] = session
        _log.info(
            "session %s created (%s, journey: %s)",
            _short(session_id),
            session.place_order_mode,
            journey.outcome.value if journey else "manual",
        )
        self._schedule_next_step(session)
        base = self.url
        session_url = f"{base}{SESSIONS_PATH}/{session_id}"
        pay_url = f"{base}/pay/{session_id}"
        return Response.json(
            201,
            {
                "session_id": session_id,
                "session_url": session_url,
                "redirect_url": pay_url,
                "qr_code_url": f"{pay_url}/qr",
                "distribution_url": f"{session_url}/distribution",
                "distribution_module": {
                    "token": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "standalone_url": pay_url,
                    "generation_url": f"{session_url}/distribution",
                },
                "expires_at": format_timestamp(session.expires_at),
            },
        )

    def _read(self, session_id: str) -> Response:
        session = self._live(session_id)  # unknown/expired first: chaos on a 404 would hide it
        with self._lock:
            roll, slow_roll = self._chaos_rng.random(), self._chaos_rng.random()
            chaos = self.chaos
            slow_for = self._chaos_rng.uniform(*chaos.read_slow_seconds)
            error_status = self._chaos_rng.choice((500, 502, 503))
        if slow_roll < chaos.read_slow_rate:
            self._count_read("slow")
            time.sleep(slow_for)  # past a tight client time-out; the answer still comes
        if roll < chaos.read_rate_limited_rate:
            self._count_read("rate_limited")
            raise _RateLimited(self.config.other_rate_limit, 1)
        if roll < chaos.read_rate_limited_rate + chaos.read_error_rate:
            self._count_read(f"http_{error_status}")
            raise _Rejected(error_status, "INTERNAL_SERVER_ERROR", "Simulated failure (chaos)")
        self._count_read("ok")
        with self._lock:
            return Response.json(200, session.read_body())

    def _count_read(self, outcome: str) -> None:
        with self._lock:
            self._reads[outcome] += 1

    def _disable_request(self, session_id: str) -> Response:
        self._disable(self._live(session_id), source="merchant_api")
        return Response(204)

    def _distribute(self, session_id: str, request: Request) -> Response:
        session = self._live(session_id)
        try:
            payload = request.json()
        except ValueError:
            raise _Rejected(400, "BAD_VALUE", "Request body is not valid JSON") from None
        if not isinstance(payload, dict) or payload.get("method") not in DISTRIBUTION_METHODS:
            raise _Rejected(400, "BAD_VALUE", "method must be one of: email, sms, token")
        contact = payload.get("contact_information")
        if not isinstance(contact, dict):
            raise _Rejected(400, "BAD_VALUE", "Missing required field: contact_information")
        with self._lock:
            session.distributions.append(
                {"method": payload["method"], "at": format_timestamp(self._clock.now())}
            )
        return Response(200)

    # -- the consumer's page ------------------------------------------------------------------------

    def _consumer_page(self, request: Request, rest: str) -> Response:
        session_id, _, suffix = rest.partition("/")
        session = self._live(unquote(session_id))
        if suffix == "qr":
            return Response(
                200,
                _qr_placeholder(f"{self.url}/pay/{session.session_id}"),
                [("Content-Type", "image/svg+xml")],
            )
        if suffix:
            raise _Rejected(404, "NOT_FOUND", "No such resource")
        if request.method == "POST":
            action = (parse_qs(request.body.decode(errors="replace")).get("action") or [""])[0]
            if action not in CONSUMER_ACTIONS:
                raise _Rejected(400, "BAD_VALUE", f"action must be one of {', '.join(CONSUMER_ACTIONS)}")
            try:
                self._change_status(session, action, source="consumer", callback=True)
            except ValueError as why:
                raise _Rejected(409, "INVALID_OPERATION", str(why)) from None
            return Response(303, headers=[("Location", f"/pay/{session.session_id}")])
        self._require_method(request, "GET")
        with self._lock:
            body = session.read_body()
        return Response.text(200, _page(body), "text/html; charset=utf-8")

    # -- control API ---------------------------------------------------------------------------------

    def _control(self, request: Request, path: str) -> Response:
        parts = [unquote(part) for part in path.strip("/").split("/") if part]
        match parts:
            case ["truth"] if request.method == "GET":
                return Response.json(200, self.truth())
            case ["truth", session_id] if request.method == "GET":
                try:
                    return Response.json(200, self.session_truth(session_id))
                except KeyError:
                    raise _Rejected(404, "NOT_FOUND", "No such session") from None
            case ["config"] if request.method == "GET":
                return Response.json(
                    200, {"url": self.url, **self.config.describe(), "chaos": self.chaos.as_dict()}
                )
            case ["sessions", session_id, "status"] if request.method == "POST":
                try:
                    status = request.json()["status"]
                    return Response.json(200, self.act(session_id, str(status)))
                except KeyError:
                    raise _Rejected(404, "NOT_FOUND", "No such session") from None
                except (TypeError, ValueError) as why:
                    raise _Rejected(409, "INVALID_OPERATION", str(why)) from None
            case ["chaos"] if request.method == "POST":
                try:
                    body = request.json()
                    profile = chaos_profile(str(body.get("profile", "none")), dict(body.get("set") or {}))
                except (ValueError, TypeError, AttributeError) as why:
                    raise _Rejected(400, "BAD_VALUE", str(why)) from None
                self.set_chaos(profile)
                return Response.json(200, profile.as_dict())
            case ["sessions", session_id, "expire"] if request.method == "POST":
                try:
                    return Response.json(200, self.expire(session_id))
                except KeyError:
                    raise _Rejected(404, "NOT_FOUND", "No such session") from None
        raise _Rejected(404, "NOT_FOUND", "No such simulator resource")


class _RateLimited(_Rejected):
    def __init__(self, limit: int, reset: int) -> None:
        super().__init__(429, "TOO_MANY_REQUESTS", "Rate limit exceeded")
        self.limit = limit
        self.reset = reset


def _error(status: int, error_code: str, message: str, correlation_id: str) -> Response:
    return Response.json(
        status, {"error_code": error_code, "error_messages": [message], "correlation_id": correlation_id}
    )


def _check_create_request(payload: object) -> None:
    """Klarna's 400 for a Create Session body that breaks its rules, naming the field."""
    if not isinstance(payload, dict):
        raise _Rejected(400, "BAD_VALUE", "Request body must be a JSON object")
    url = payload.get("payment_session_url")
    if not isinstance(url, str) or not url:
        raise _Rejected(400, "BAD_VALUE", "Missing required field: payment_session_url")
    # Klarna needs the URL of an existing Klarna Payments session (or Klarna Checkout order).
    if not url.startswith(("http://", "https://")) or not (
        "/payments/v1/sessions/" in url or "/checkout/v3/orders/" in url
    ):
        raise _Rejected(400, "BAD_VALUE", "Bad value: payment_session_url")
    merchant_urls = payload.get("merchant_urls")
    if merchant_urls is not None and not (
        isinstance(merchant_urls, dict) and all(isinstance(value, str) for value in merchant_urls.values())
    ):
        raise _Rejected(400, "BAD_VALUE", "Bad value: merchant_urls")
    options = payload.get("options")
    if options is not None and not isinstance(options, dict):
        raise _Rejected(400, "BAD_VALUE", "Bad value: options")
    if options and options.get("place_order_mode", "NONE") not in PLACE_ORDER_MODES:
        raise _Rejected(400, "BAD_VALUE", "Bad value: options.place_order_mode")
    profile_id = payload.get("profile_id")
    if profile_id is not None and not isinstance(profile_id, str):
        raise _Rejected(400, "BAD_VALUE", "Bad value: profile_id")


def _summary(sessions: list[dict[str, Any]], reads: dict[str, int]) -> dict[str, Any]:
    finals = Counter(session["final_status"] or "OPEN" for session in sessions)
    callbacks: Counter[str] = Counter()
    for session in sessions:
        for event in session["callbacks"]:
            callbacks["events"] += 1
            for chaos in event["chaos"]:
                callbacks[chaos] += 1
            for delivery in event["deliveries"]:
                callbacks["attempts"] += len(delivery["attempts"])
                callbacks[delivery["outcome"]] += 1
    return {
        "sessions": len(sessions),
        "final_status": dict(sorted(finals.items())),
        "callbacks": dict(sorted(callbacks.items())),
        "reads": dict(sorted(reads.items())),
    }


def _without_query(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _short(session_id: str) -> str:
    return session_id[:8]


def _page(body: dict[str, Any]) -> str:
    """The consumer's page: the session's state and a button per thing a consumer can do."""
    buttons = "".join(
        f'<button name="action" value="{action}">{action.replace("_", " ").title()}</button> '
        for action in CONSUMER_ACTIONS
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Klarna HPP simulator</title></head><body>"
        f"<h1>Pay with Klarna (simulated)</h1><p>Session <code>{html.escape(body['session_id'])}</code>: "
        f"<strong>{html.escape(body['status'])}</strong>, updated {html.escape(body['updated_at'])}, "
        f"expires {html.escape(body['expires_at'])}.</p>"
        f"<form method='post'>{buttons}</form></body></html>"
    )


def _qr_placeholder(target: str) -> bytes:
    """An image standing in for the QR code (a real one needs an encoder this simulator does without)."""
    text = html.escape(target)
    return (
        "<svg xmlns='http://www.w3.org/2000/svg' width='320' height='80'>"
        "<rect width='320' height='80' fill='white' stroke='black'/>"
        f"<text x='8' y='30' font-size='12'>QR code for</text><text x='8' y='55' font-size='9'>{text}</text>"
        "</svg>"
    ).encode()
