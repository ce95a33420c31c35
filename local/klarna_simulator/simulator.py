"""The Klarna HPP simulator: Klarna's HPP API v1, consumers that use the sessions, and callbacks
delivered the way Klarna delivers them (docs/klarna-hpp.md; how to run and drive it: docs/local-stack.md).
The project's one fake Klarna: the local stack and the demo run it with seeded journeys and chaos, tests
run it with manual journeys and drive it through its test API.

    with KlarnaSimulator(SimulatorConfig(seed=7, chaos=chaos_profile("default"))) as klarna:
        ...  # point the tracker at klarna.url with klarna.config.username / password
        truth = klarna.truth()  # what really happened to every session

Klarna's API: Create Session (`POST /hpp/v1/sessions`, 201; its body checked as Klarna's OpenAPI says,
`options` enums included), Read Session (`GET session_url`, 200), Disable Session (`DELETE session_url`,
204) and Distribution (`POST distribution_url`, 201 or 204), HTTP Basic auth, errors as
`{"error_code", "error_messages", "correlation_id"}`, 404 once a session has expired, per-second rate
limits with `X-Ratelimit-Limit/Remaining/Reset` on every answer (429 over the limit). A create's API
URLs point under `session_url_path` (the documented path unless configured otherwise: a session is
served at the URLs it was given). `redirect_url` is a page where a person can play the consumer,
`qr_code_url` an image.

The test API (in-process; the same over HTTP under `/_simulator/`, see control.py):
- sessions: `add_session` (seed one in any state), `act` (move it as its consumer would; its callback
  follows unless `callback=False`), `expire`, `forget`, `read_body`, `callback_body`, `session_url`,
  `status_update_url`, `session_ids`;
- faults: `fail_next` / `fail_always` (5xx, 429, garbage bodies, late answers, dropped connections,
  any status), `remove_fault`, `clear_faults`, `faults`;
- the merchant API's request log: `requests`, `requests_to`, `wait_for_requests`, `clear_requests`;
- time and limits: `clock` (pass `clock=` a time source to move time yourself; `clock.offset` puts
  Klarna's clock ahead), `set_rate_limits`, `set_chaos`, `set_session_url_path`;
- without HTTP: `in_process_pool()` (before `start()`, the simulator's URL is IN_PROCESS_URL);
- `errors`: what went wrong inside the simulator itself (a test can assert there was nothing).
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, unquote

import urllib3

from local.common.httpserver import HOST, HttpServer, Request, Response
from local.common.lifecycle import Startable
from local.klarna_simulator import control
from local.klarna_simulator.callbacks import CallbackSender, callback_body
from local.klarna_simulator.clock import SimulatorClock, format_timestamp, parse_timestamp
from local.klarna_simulator.config import SimulatorConfig
from local.klarna_simulator.in_process import InProcessPool
from local.klarna_simulator.journeys import MERCHANT_DISABLE, session_rng
from local.klarna_simulator.klarna_api import (
    SESSIONS_PATH,
    Rejected,
    check_create_request,
    check_distribution_request,
    created_body,
    credentials_match,
    default_error_code,
    error_response,
    seeded_uuid,
)
from local.klarna_simulator.pages import CONSUMER_ACTIONS, payment_page, qr_placeholder
from local.klarna_simulator.rate_limits import CREATE, OTHER, RateLimiter, rate_limit_headers
from local.klarna_simulator.records import (
    COMPLETION_FIELDS,
    InvalidOperation,
    SimSession,
    StatusChange,
    without_query,
)
from local.klarna_simulator.scripting import Body, Fault, FaultScript, RecordedRequest, RequestLog
from local.klarna_simulator.tasks import TaskScheduler

if TYPE_CHECKING:
    import random

    from local.klarna_simulator.chaos import ChaosProfile

_log = logging.getLogger("local.klarna")

CONTROL_PATH = "/_simulator"
# The URL of a simulator that is not serving HTTP (".invalid" never resolves, so nothing leaves).
IN_PROCESS_URL = "http://klarna-simulator.invalid"
_STATUS_PATTERN = re.compile(r"^[A-Z][A-Z_]{0,39}$")
_REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _check_status(status: object) -> str:
    if not isinstance(status, str) or not _STATUS_PATTERN.match(status):
        raise ValueError(f"not a status: {status!r}")
    return status


def _completion(fields: Mapping[str, Any], status: str) -> dict[str, str]:
    """The COMPLETED fields a test gave (authorization_token, order_id, klarna_reference)."""
    unknown = set(fields) - set(COMPLETION_FIELDS)
    if unknown:
        raise TypeError(f"unexpected fields: {', '.join(sorted(unknown))}")
    given = {name: str(value) for name, value in fields.items() if value is not None}
    if given and status != "COMPLETED":
        raise ValueError(f"{', '.join(sorted(given))} only come with COMPLETED")
    return given


class KlarnaSimulator(Startable):
    """Klarna HPP over real HTTP on 127.0.0.1. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = HOST,
        port: int = 0,
        merchant_disable: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config or SimulatorConfig()
        # Changeable while running (set_chaos), e.g. to turn chaos up halfway through a test.
        self.chaos = self.config.chaos
        # Called with a session id by MERCHANT_DISABLE steps (e.g. to go through the tracker's API).
        self.merchant_disable = merchant_disable
        self.clock = SimulatorClock(clock)
        self.errors: list[BaseException] = []  # unexpected failures of the simulator itself
        self._server = HttpServer(
            self._handle, host=host, port=port, name="klarna-simulator", on_error=self._server_failed
        )
        self._serving = False
        self._stopping = threading.Event()  # cuts scripted delays short on stop()
        self._lock = threading.RLock()
        self._sessions: dict[str, SimSession] = {}
        self._ordinal = 0
        self._chaos_rng = session_rng(self.config.seed, -1)  # for reads: one stream for the whole run
        self._reads: Counter[str] = Counter()
        self._rate_limits = RateLimiter(
            create=self.config.create_rate_limit, other=self.config.other_rate_limit
        )
        # Where new sessions' API URLs point, and every path handed out so far (each session is served
        # under its own).
        self._session_url_path = self.config.session_url_path
        self._api_paths = dict.fromkeys((SESSIONS_PATH, self._session_url_path))
        self._faults = FaultScript()
        self._requests = RequestLog()
        self._tasks = TaskScheduler(workers=self.config.workers, name="klarna-sim")
        self._http = urllib3.PoolManager(num_pools=4, maxsize=self.config.workers, retries=False)
        self._callbacks = CallbackSender(
            self.config, tasks=self._tasks, http=self._http, clock=self.clock, lock=self._lock
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        self._stopping.clear()
        self._tasks.start()
        self._server.start()
        self._serving = True
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
        self._stopping.set()  # first, so requests waiting out a scripted delay return at once
        self._tasks.stop()
        self._server.stop()
        self._http.clear()
        self._serving = False

    @property
    def url(self) -> str:
        return self._server.url if self._serving else IN_PROCESS_URL

    def in_process_pool(self) -> urllib3.PoolManager:
        """A urllib3 pool served by this simulator in memory, without a socket (for unit tests)."""
        return InProcessPool(self._handle, lambda: self.url)

    # -- what a client needs ---------------------------------------------------------------------

    def auth_header(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.config.username}:{self.config.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def session_url(self, session_id: str) -> str:
        """The session's `session_url`: where it is served (the documented form for a seeded one)."""
        with self._lock:
            session = self._sessions.get(session_id)
            api_path = session.api_path if session is not None else SESSIONS_PATH
        return f"{self.url}{api_path}/{session_id}"

    # -- sessions: seed, move, look ---------------------------------------------------------------

    def add_session(
        self,
        session_id: str | None = None,
        *,
        status: str = "WAITING",
        updated_at: datetime | str | None = None,
        expires_at: datetime | str | None = None,
        place_order_mode: str = "NONE",
        merchant_urls: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Seed a session as if it had been created (by anyone) and moved to `status`: no journey, no
        callback. `fields` are the COMPLETED ones (drawn when not given) and any other Read Session
        field (e.g. `customer`). Returns what Read Session answers for it."""
        _check_status(status)
        completion = _completion({k: v for k, v in fields.items() if k in COMPLETION_FIELDS}, status)
        with self._lock:
            ordinal, rng = self._next_ordinal()
            now = self.clock.now()
            session = SimSession(
                session_id=session_id or seeded_uuid(rng),
                ordinal=ordinal,
                rng=rng,
                created_at=now,
                expires_at=parse_timestamp(expires_at) if expires_at else now + self._lifetime(),
                updated_at=parse_timestamp(updated_at) if updated_at else now,
                status=status,
                place_order_mode=place_order_mode,
                merchant_urls=dict(merchant_urls or {}),
                journey=None,
                read_fields={k: v for k, v in fields.items() if k not in COMPLETION_FIELDS},
            )
            if status == "COMPLETED":
                self._complete(session, completion)
            self._register(session, source="seed")
            return session.read_body()

    def act(
        self,
        session_id: str,
        status: str,
        *,
        updated_at: datetime | str | None = None,
        callback: bool = True,
        **completion: Any,
    ) -> dict[str, Any]:
        """Move a session as its consumer would; its callback follows (`callback=False`: none, for a
        test that delivers it itself). `updated_at` defaults to now (strictly after the last change);
        COMPLETED's fields (authorization_token, order_id, klarna_reference) are drawn unless given.

        KeyError for an unknown session; InvalidOperation when it cannot change now (expired or final).
        """
        given = _completion(completion, _check_status(status))
        with self._lock:
            session = self._sessions[session_id]
        stamp = parse_timestamp(updated_at) if updated_at else None
        self._change_status(session, status, source="control", callback=callback, at=stamp, given=given)
        with self._lock:
            return session.read_body()

    def expire(self, session_id: str) -> dict[str, Any]:
        """Make a session expire now: Read and Disable answer 404 from here on."""
        with self._lock:
            session = self._sessions[session_id]
            session.expires_at = min(session.expires_at, self.clock.now() - timedelta(milliseconds=1))
            _log.info("session %s expired (on request)", session_id[:8])
            return session.read_body()

    def forget(self, session_id: str) -> None:
        """Klarna no longer knows the session (before its expiry, too): Read and Disable answer 404."""
        with self._lock:
            del self._sessions[session_id]

    def session_ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def read_body(self, session_id: str) -> dict[str, Any]:
        """What Read Session answers for the session (even once it has expired)."""
        with self._lock:
            return self._sessions[session_id].read_body()

    def callback_body(self, session_id: str, event_id: str | None = None) -> dict[str, Any]:
        """The body Klarna POSTs to `status_update` for the session's current state."""
        return callback_body(event_id or str(uuid.uuid4()), self.read_body(session_id))

    def status_update_url(self, session_id: str) -> str | None:
        """The session's `merchant_urls.status_update` as Klarna calls it: `{{session_id}}` filled in and
        the tracker's secret included (the truth leaves the query out)."""
        with self._lock:
            return self._sessions[session_id].status_update_url()

    def truth(self) -> dict[str, Any]:
        """Everything that really happened: each session's final status and every callback's fate."""
        now = self.clock.now()
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
            return self._sessions[session_id].truth(self.clock.now())

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every journey step and callback delivery is done (abandoned sessions may be open)."""
        return self._tasks.wait_idle(timeout)

    # -- faults --------------------------------------------------------------------------------------

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
        """Answer the next `times` matching merchant-API requests as scripted (None matches any method or
        path; a full URL counts by its path); faults are tried in the order added, the first match wins.

        `status=None` with a `delay`: Klarna's own answer, late (e.g. past the client's timeout).
        `body=None` with a 4xx/5xx: Klarna's error body. Bytes or text are sent as they are, labelled
        JSON unless `headers` say otherwise. `disconnect=True`: close the connection without an answer.
        """
        fault = Fault(method, path_prefix, status, body, dict(headers or {}), delay, times, disconnect)
        return self._faults.add(fault)

    def fail_always(self, method: str | None, path_prefix: str | None, **script: Any) -> Fault:
        """Like fail_next (the same `script` fields), for every matching request until remove_fault()
        or clear_faults()."""
        return self.fail_next(method, path_prefix, times=None, **script)

    def remove_fault(self, fault: Fault) -> None:
        self._faults.remove(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        return self._faults.snapshot()

    # -- the request log -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request the merchant API received (not the consumer page, not /_simulator/), oldest first."""
        return self._requests.matching()

    def requests_to(self, method: str | None = None, path_prefix: str | None = None) -> list[RecordedRequest]:
        return self._requests.matching(method, path_prefix)

    def wait_for_requests(
        self, count: int, method: str | None = None, path_prefix: str | None = None, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Block until at least `count` matching requests arrived; TimeoutError otherwise."""
        return self._requests.wait_for(count, method, path_prefix, timeout)

    def clear_requests(self) -> None:
        self._requests.clear()

    # -- behaviour that changes while running ------------------------------------------------------

    def set_chaos(self, chaos: ChaosProfile) -> None:
        """Use another chaos profile for callbacks and reads from now on."""
        self.chaos = chaos
        _log.info("chaos profile now %s", chaos.name)

    def set_session_url_path(self, path: str) -> None:
        """Where the API URLs of sessions created from now on point (`session_url_path`); sessions
        created before stay where they are. ValueError for a path the configuration would refuse."""
        replace(self.config, session_url_path=path)  # the configuration's own check
        with self._lock:
            self._session_url_path = path
            self._api_paths[path] = None

    def set_rate_limits(self, *, create: int | None = None, other: int | None = None) -> None:
        """Klarna's per-second limits from now on; one left out goes back to the configured value."""
        self._rate_limits.set_limits(create=create, other=other)

    # -- status changes ----------------------------------------------------------------------------

    def _next_ordinal(self) -> tuple[int, random.Random]:
        """The next session's ordinal and seeded generator (call under the lock)."""
        ordinal, self._ordinal = self._ordinal, self._ordinal + 1
        return ordinal, session_rng(self.config.seed, ordinal)

    def _lifetime(self) -> timedelta:
        return timedelta(seconds=self.config.session_lifetime)

    def _register(self, session: SimSession, *, source: str) -> None:
        session.history.append(StatusChange(session.status, format_timestamp(session.updated_at), source))
        self._sessions[session.session_id] = session

    def _change_status(
        self,
        session: SimSession,
        status: str,
        *,
        source: str,
        callback: bool,
        at: datetime | None = None,
        given: Mapping[str, str] | None = None,
    ) -> None:
        """Apply a status change and send its callback; InvalidOperation when the session cannot change."""
        with self._lock:
            now = self.clock.now()
            if session.expired(now):
                raise InvalidOperation(f"session {session.session_id} has expired")
            if session.is_final:
                raise InvalidOperation(f"session {session.session_id} is {session.status} (final)")
            session.updated_at = at or self.clock.after(session.updated_at)
            session.status = status
            if status == "COMPLETED":
                self._complete(session, given or {})
            session.history.append(StatusChange(status, format_timestamp(session.updated_at), source))
            event = self._callbacks.event_for(session, self.chaos) if callback else None
        _log.info("session %s → %s (%s)", session.session_id[:8], status, source)
        if event is not None:
            self._callbacks.send(session, event)

    @staticmethod
    def _complete(session: SimSession, given: Mapping[str, str]) -> None:
        """COMPLETED's fields: the ones a test gave, or Klarna's (drawn from the session's generator)."""
        if given:
            for name, value in given.items():
                setattr(session, name, value)
            return
        rng = session.rng
        if not session.completes_with_order:
            session.authorization_token = seeded_uuid(rng)
        else:
            session.order_id = seeded_uuid(rng)
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
            now = self.clock.now()
            if session.expired(now) or session.is_final:
                _log.info(
                    "session %s: consumer step %s skipped (%s)",
                    session.session_id[:8],
                    step.action,
                    "expired" if session.expired(now) else session.status,
                )
                return
        if step.action == MERCHANT_DISABLE:
            self._merchant_disables(session)
        else:
            try:
                self._change_status(session, step.action, source="consumer", callback=True)
            except InvalidOperation as why:  # expired or final in between
                _log.info("session %s: consumer step skipped: %s", session.session_id[:8], why)
                return
        self._schedule_next_step(session)

    def _merchant_disables(self, session: SimSession) -> None:
        session_id = session.session_id
        action: dict[str, Any] = {"action": "disable", "at": format_timestamp(self.clock.now())}
        if self.merchant_disable is not None:
            action["via"] = "hook"
            try:
                self.merchant_disable(session_id)
                action["result"] = "called"
            except Exception as error:
                action["result"] = f"failed: {type(error).__name__}"
                _log.warning("session %s: merchant disable hook failed: %r", session_id[:8], error)
        elif self.config.merchant_disable_url:
            url = self.config.merchant_disable_url.replace("{session_id}", session_id)
            action["via"] = without_query(url)
            try:
                response = self._http.request("DELETE", url, timeout=urllib3.Timeout(total=10))
                action["result"] = f"http_{response.status}"
            except urllib3.exceptions.HTTPError as error:
                action["result"] = f"failed: {type(error).__name__}"
            _log.info("session %s: merchant DELETE → %s", session_id[:8], action["result"])
        else:
            action["via"] = "klarna_api"
            try:
                self._disable(session, source="merchant")
                action["result"] = "disabled"
            except Rejected as rejected:
                action["result"] = rejected.error_code
        with self._lock:
            session.merchant_actions.append(action)

    def _disable(self, session: SimSession, *, source: str) -> None:
        with self._lock:
            if session.expired(self.clock.now()):
                raise Rejected(404, "NOT_FOUND", "Session not found or expired")
            if session.status == "DISABLED":
                return  # disabling twice changes nothing
            if session.is_final:
                raise Rejected(
                    400, "INVALID_OPERATION", f"The session is {session.status} and cannot be disabled"
                )
        self._change_status(session, "DISABLED", source=source, callback=self.config.callback_on_disable)

    # -- HTTP --------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Response | None:
        """Every request, from the HTTP server or the in-process pool."""
        correlation_id = str(uuid.uuid4())
        path = request.path.rstrip("/") or "/"
        merchant_api = not path.startswith(("/pay/", CONTROL_PATH + "/")) and path != CONTROL_PATH
        recorded = (
            self._requests.record(request, authorized=self._authorized(request)) if merchant_api else None
        )
        try:
            response = self._route(request, path, correlation_id)
        except Rejected as rejected:
            response = rejected.response(correlation_id)
        except Exception as error:  # a bug in the simulator: shown in `errors`, answered as Klarna's 500
            self.errors.append(error)
            _log.exception("simulator failed on %s %s", request.method, request.path)
            response = error_response(
                500, "INTERNAL_SERVER_ERROR", f"simulator failed: {error!r}", correlation_id
            )
        if response is not None:
            response.headers.append(("Klarna-Correlation-Id", correlation_id))
        if recorded is not None:  # before the answer is sent: the client may look right after
            recorded.response_status = response.status if response is not None else None
        return response

    def _server_failed(self, error: BaseException) -> None:
        self.errors.append(error)
        _log.error("klarna-simulator: unexpected server error: %r", error)

    def _route(self, request: Request, path: str, correlation_id: str) -> Response | None:
        if path == CONTROL_PATH or path.startswith(CONTROL_PATH + "/"):
            return control.handle(self, request, path[len(CONTROL_PATH) :])
        if path.startswith("/pay/"):
            return self._consumer_page(request, path[len("/pay/") :])
        fault = self._faults.take(request.method, request.path)
        if fault is not None:
            return self._scripted(fault, request, path, correlation_id)
        return self._klarnas_answer(request, path, correlation_id)

    def _klarnas_answer(self, request: Request, path: str, correlation_id: str) -> Response:
        """Klarna's own answer, with its rate-limit headers (every answer has them, not only a 429)."""
        try:
            response = self._merchant_api(request, path)
        except Rejected as rejected:
            response = rejected.response(correlation_id)
        sent = {name.lower() for name, _ in response.headers}
        quota = self._rate_limits.peek(CREATE if path == SESSIONS_PATH else OTHER)
        response.headers.extend(header for header in quota.headers() if header[0].lower() not in sent)
        return response

    def _scripted(self, fault: Fault, request: Request, path: str, correlation_id: str) -> Response | None:
        # Event.wait, not sleep: stop() must not wait for scripted delays to run out.
        if (fault.delay > 0 and self._stopping.wait(fault.delay)) or fault.disconnect:
            return None  # drops the connection without answering
        if fault.status is None:
            return self._klarnas_answer(request, path, correlation_id)
        code = default_error_code(fault.status)
        error = {"error_code": code, "error_messages": [code], "correlation_id": correlation_id}
        return fault.response(fault.status, error)

    def _merchant_api(self, request: Request, path: str) -> Response:
        if path == SESSIONS_PATH:
            self._admit(request, CREATE, "POST")
            return self._create(request)
        with self._lock:
            api_paths = list(self._api_paths)
        for api_path in api_paths:
            if path.startswith(api_path + "/"):
                quoted_id, _, rest = path[len(api_path) + 1 :].partition("/")
                return self._session_api(request, api_path, unquote(quoted_id), rest)
        raise Rejected(404, "NOT_FOUND", "No such resource")

    def _session_api(self, request: Request, api_path: str, session_id: str, rest: str) -> Response:
        """A session's own URLs: `session_url` (GET, DELETE) and its `distribution_url` (POST)."""
        if not rest:
            self._admit(request, OTHER, "GET", "DELETE")
            session = self._live(session_id, api_path)
            return self._read(session) if request.method == "GET" else self._disable_request(session)
        if rest == "distribution":
            self._admit(request, OTHER, "POST")
            return self._distribute(self._live(session_id, api_path), request)
        raise Rejected(404, "NOT_FOUND", "No such resource")

    def _admit(self, request: Request, kind: str, *methods: str) -> None:
        """Klarna's checks before any work, in order: the method, the credentials, the rate limit (only
        authenticated calls count against it)."""
        if request.method not in methods:
            raise Rejected(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")
        if not self._authorized(request):
            raise Rejected(401, "UNAUTHORIZED", "Missing or invalid credentials")
        quota = self._rate_limits.count(kind)
        if quota.exceeded:
            raise Rejected(429, "TOO_MANY_REQUESTS", "Rate limit exceeded", quota.headers())

    def _authorized(self, request: Request) -> bool:
        return credentials_match(request.header("Authorization"), self.config.username, self.config.password)

    def _live(self, session_id: str, api_path: str | None = None) -> SimSession:
        """The session, or Klarna's 404 when it is unknown or expired (Klarna does not say which), or
        asked for under another path than the one its URLs were given under."""
        with self._lock:
            session = self._sessions.get(session_id)
            if (
                session is None
                or session.expired(self.clock.now())
                or (api_path is not None and api_path != session.api_path)
            ):
                raise Rejected(404, "NOT_FOUND", "Session not found or expired")
            return session

    def _create(self, request: Request) -> Response:
        try:
            payload = request.json()
        except ValueError:
            raise Rejected(400, "BAD_VALUE", "Request body is not valid JSON") from None
        payload = check_create_request(payload)
        options = dict(payload.get("options") or {})
        with self._lock:
            ordinal, rng = self._next_ordinal()
            session_id = seeded_uuid(rng)  # first: the same seed gives the same ids
            journey = None
            if self.config.journeys == "auto":
                journey = self.config.journey_model.draw(rng, self.config.think_time)
            created = self.clock.now()
            session = SimSession(
                session_id=session_id,
                ordinal=ordinal,
                rng=rng,
                created_at=created,
                expires_at=created + self._lifetime(),
                updated_at=created,
                status="WAITING",
                place_order_mode=str(options.get("place_order_mode", "NONE")),
                merchant_urls=dict(payload.get("merchant_urls") or {}),
                journey=journey,
                options=options,
                api_path=self._session_url_path,
                payment_session_url=payload["payment_session_url"],
                profile_id=payload.get("profile_id"),
            )
            self._register(session, source="create")
        _log.info(
            "session %s created (%s, journey: %s)",
            session_id[:8],
            session.place_order_mode,
            journey.outcome.value if journey else "manual",
        )
        self._schedule_next_step(session)
        expires_at = format_timestamp(session.expires_at)
        body = created_body(self.url, session.api_path, session_id, expires_at, rng)
        return Response.json(201, body)

    def _read(self, session: SimSession) -> Response:
        self._read_chaos()  # after the 404 for an unknown or expired session: chaos would hide it
        with self._lock:
            return Response.json(200, session.read_body())

    def _read_chaos(self) -> None:
        """Slow, failing or rate-limited reads, as this run's chaos profile says."""
        with self._lock:
            roll, slow_roll = self._chaos_rng.random(), self._chaos_rng.random()
            chaos = self.chaos
            slow_for = self._chaos_rng.uniform(*chaos.read_slow_seconds)
            error_status = self._chaos_rng.choice((500, 502, 503))
        if slow_roll < chaos.read_slow_rate:
            self._count_read("slow")
            self._stopping.wait(slow_for)  # past a tight client time-out; the answer still comes
        if roll < chaos.read_rate_limited_rate:
            self._count_read("rate_limited")
            limit = self._rate_limits.limit(OTHER)
            raise Rejected(429, "TOO_MANY_REQUESTS", "Rate limit exceeded", rate_limit_headers(limit).items())
        if roll < chaos.read_rate_limited_rate + chaos.read_error_rate:
            self._count_read(f"http_{error_status}")
            raise Rejected(error_status, "INTERNAL_SERVER_ERROR", "Simulated failure (chaos)")
        self._count_read("ok")

    def _count_read(self, outcome: str) -> None:
        with self._lock:
            self._reads[outcome] += 1

    def _disable_request(self, session: SimSession) -> Response:
        self._disable(session, source="merchant_api")
        return Response(204)

    def _distribute(self, session: SimSession, request: Request) -> Response:
        """Send the payment link (201 or 204, as configured). The contact data is kept nowhere (the
        request log, for tests, has the request as received) and never logged."""
        try:
            payload = check_distribution_request(request.json())
        except ValueError:
            raise Rejected(400, "BAD_VALUE", "Request body is not valid JSON") from None
        with self._lock:
            if session.status == "DISABLED":
                raise Rejected(400, "INVALID_OPERATION", "The session is disabled by merchant")
            sent = {"method": payload["method"], "at": format_timestamp(self.clock.now())}
            session.distributions.append(sent)
        _log.info("session %s: payment link sent by %s", session.session_id[:8], payload["method"])
        return Response(self.config.distribution_status)

    # -- the consumer's page ------------------------------------------------------------------------

    def _consumer_page(self, request: Request, rest: str) -> Response:
        session_id, _, suffix = rest.partition("/")
        session = self._live(unquote(session_id))
        if suffix == "qr":
            image = qr_placeholder(f"{self.url}/pay/{session.session_id}")
            return Response(200, image, [("Content-Type", "image/svg+xml")])
        if suffix:
            raise Rejected(404, "NOT_FOUND", "No such resource")
        if request.method == "POST":
            return self._consumer_acts(session, request)
        if request.method != "GET":
            raise Rejected(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")
        with self._lock:
            body = session.read_body()
        return Response.text(200, payment_page(body), "text/html; charset=utf-8")

    def _consumer_acts(self, session: SimSession, request: Request) -> Response:
        action = (parse_qs(request.body.decode(errors="replace")).get("action") or [""])[0]
        if action not in CONSUMER_ACTIONS:
            raise Rejected(400, "BAD_VALUE", f"action must be one of {', '.join(CONSUMER_ACTIONS)}")
        try:
            self._change_status(session, action, source="consumer", callback=True)
        except InvalidOperation as why:
            raise Rejected(409, "INVALID_OPERATION", str(why)) from None
        return Response(303, headers=[("Location", f"/pay/{session.session_id}")])


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
