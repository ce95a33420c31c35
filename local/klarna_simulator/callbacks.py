"""Callbacks the way Klarna delivers them: a POST of `{"event_id", "session"}` to the session's
`status_update` URL, 3 s to answer, retried a few seconds later, 4 calls in all; with this run's chaos
(dropped, duplicated, delayed, emptied) drawn up front from the session's own seeded generator."""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import urllib3

from local.klarna_simulator.clock import SimulatorClock, format_timestamp
from local.klarna_simulator.klarna_api import seeded_uuid
from local.klarna_simulator.records import Attempt, CallbackEvent, Delivery, SimSession

if TYPE_CHECKING:
    from local.klarna_simulator.chaos import ChaosProfile
    from local.klarna_simulator.config import SimulatorConfig
    from local.klarna_simulator.tasks import TaskScheduler

_log = logging.getLogger("local.klarna")
_HEADERS = {"Content-Type": "application/json", "User-Agent": "Klarna-HPP-Simulator/1.0"}


def callback_body(event_id: str, session: dict[str, Any]) -> dict[str, Any]:
    """What Klarna POSTs: the event's id and the session as Read Session returns it."""
    return {"event_id": event_id, "session": session}


class CallbackSender:
    """Decides each callback's fate and delivers it on the simulator's task threads."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        tasks: TaskScheduler,
        http: urllib3.PoolManager,
        clock: SimulatorClock,
        lock: threading.RLock,
    ) -> None:
        self._config = config
        self._tasks = tasks
        self._http = http
        self._clock = clock
        self._lock = lock  # the simulator's: it guards the records this class appends to

    def event_for(self, session: SimSession, chaos: ChaosProfile) -> CallbackEvent:
        """The callback for the session's current state, with its chaos decided now (call under the lock)."""
        rng = session.rng
        body = session.read_body()
        event_id = seeded_uuid(rng)
        event = CallbackEvent(
            event_id=event_id,
            status=session.status,
            updated_at=body["updated_at"],
            body=callback_body(event_id, body),
            url=session.status_update_url(),
        )
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

    def send(self, session: SimSession, event: CallbackEvent) -> None:
        short = session.session_id[:8]
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
        attempt = self._post(event.url, body, number)
        retry = self._should_retry(attempt)
        with self._lock:
            delivery.attempts.append(attempt)
            if attempt.succeeded:
                delivery.outcome = "delivered"
            elif not retry:
                delivery.outcome = "gave_up"
        _log.info(
            "session %s: callback %s%s attempt %d → %s%s",
            session.session_id[:8],
            event.status,
            " (duplicate)" if delivery.copy > 1 else "",
            number,
            attempt.result,
            " (empty body)" if not body else "",
        )
        if retry:
            again = partial(self._attempt, session, event, delivery, number + 1)
            self._tasks.call_later(self._config.callback_retry_delay, again)

    def _post(self, url: str, body: bytes, number: int) -> Attempt:
        started_at, started = format_timestamp(self._clock.now()), time.monotonic()
        status: int | None = None
        timeout = urllib3.Timeout(total=self._config.callback_timeout)
        try:
            status = self._http.request("POST", url, body=body, headers=_HEADERS, timeout=timeout).status
            result = f"http_{status}"
        except urllib3.exceptions.NewConnectionError:  # a subclass of TimeoutError in urllib3, for history
            result = "connection_error"
        except urllib3.exceptions.TimeoutError:
            result = "timeout"
        except urllib3.exceptions.HTTPError:
            result = "connection_error"
        duration_ms = int((time.monotonic() - started) * 1000)
        return Attempt(number, started_at, result, status, not body, duration_ms)

    def _should_retry(self, attempt: Attempt) -> bool:
        if attempt.succeeded or attempt.number >= self._config.callback_attempts:
            return False
        refused = attempt.http_status is not None and 400 <= attempt.http_status < 500  # noqa: PLR2004
        return not refused or self._config.retry_callbacks_on_4xx
