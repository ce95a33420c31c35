"""Scheduled invocations (`Schedule` and `ScheduleV2` events) every `--poll-interval` seconds.

Each invocation gets what the schedule would deliver: the event's `Input` (JSON, with EventBridge
Scheduler's context attributes such as `<aws.scheduler.scheduled-time>` filled in) if it has one, else the
default notification (EventBridge's "Scheduled Event" for `Schedule`; EventBridge Scheduler's for
`ScheduleV2`). The function's context counts down from its Timeout as on Lambda. A run that takes longer
than the interval delays the next one (one run at a time per schedule); the log says so.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from local.emulators.runtime import InvokeResult

_log = logging.getLogger("local.emulators.scheduler")
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of a `rate(...)` expression; None for cron() and anything else."""
    match = _RATE.match(expression.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


@dataclass(frozen=True)
class ScheduleSpec:
    function: str  # logical id
    name: str  # the event's name in the template
    event_type: str  # "Schedule" or "ScheduleV2"
    expression: str
    input: str | None = None  # the event's Input (a JSON string)
    enabled: bool = True

    def payload(self, *, region: str, account: str, now: datetime) -> Any:
        resource = (
            f"arn:aws:scheduler:{region}:{account}:schedule/default/{self.function}-{self.name}"
            if self.event_type == "ScheduleV2"
            else f"arn:aws:events:{region}:{account}:rule/{self.function}-{self.name}"
        )
        if self.input is not None:
            text = self.input
            if self.event_type == "ScheduleV2":
                # EventBridge Scheduler fills in its context attributes before it delivers the Input.
                context = {
                    "schedule-arn": resource,
                    "scheduled-time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "execution-id": uuid.uuid4().hex[:16],
                    "attempt-number": "1",
                }
                for name, value in context.items():
                    text = text.replace(f"<aws.scheduler.{name}>", value)
            return json.loads(text)
        source = "aws.scheduler" if self.event_type == "ScheduleV2" else "aws.events"
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": source,
            "account": account,
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [resource],
            "detail": {},
        }


class Scheduler:
    def __init__(
        self,
        schedules: list[ScheduleSpec],
        invoke: Callable[[str, Any], InvokeResult],
        *,
        interval: float,
        region: str = "eu-west-1",
        account: str = "123456789012",
    ) -> None:
        if interval <= 0:
            raise ValueError("the poll interval must be positive")
        self.schedules = [schedule for schedule in schedules if schedule.enabled]
        self.interval = interval
        self.runs: dict[str, int] = {}
        self._invoke = invoke
        self._region = region
        self._account = account
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for schedule in self.schedules:
            _log.info(
                "%s every %gs (%s on AWS: %s)",
                schedule.function,
                self.interval,
                schedule.event_type,
                schedule.expression,
            )
            thread = threading.Thread(
                target=self._run, args=(schedule,), name=f"schedule-{schedule.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def halt(self) -> None:
        """Start no more runs; `stop()` then waits for the runs in progress."""
        self._stop.set()

    def stop(self) -> None:
        self.halt()
        for thread in self._threads:
            thread.join(timeout=5)  # a run in progress finishes in its worker; the stack stops that next
        self._threads.clear()

    def _run(self, schedule: ScheduleSpec) -> None:
        key = f"{schedule.function}.{schedule.name}"
        next_run = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_run - time.monotonic())):
            started = time.monotonic()
            event = schedule.payload(region=self._region, account=self._account, now=datetime.now(UTC))
            result = self._invoke(schedule.function, event)
            self.runs[key] = self.runs.get(key, 0) + 1
            elapsed = time.monotonic() - started
            outcome = "ok" if result.ok else f"failed: {result.error_summary}"
            _log.info("%s run %d %s (%d ms)", schedule.function, self.runs[key], outcome, elapsed * 1000)
            next_run = started + self.interval
            if elapsed > self.interval:
                _log.info(
                    "%s: the run took longer than the %gs interval; the next starts now", key, self.interval
                )
