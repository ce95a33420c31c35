"""The poller's read policy on a simulated clock: Klarna reads per session, the peak read rate, and how
soon the poller finds completions whose callbacks were lost, for the previous backoff (1, 2, 4, 8, then
every 15 minutes) and the current policy, side by side (run by `make bench`; it prints a table and
never fails a build).

It runs the core's own code, not a copy: every minute `hpp_core.poller.run_poll` (due sessions oldest
first, the catch-up, the time budget), paced by `hpp_core.rate_limit.RateLimiter`, with the schedules of
`hpp_core.poll_schedule` (`previous` is `ScheduleKind.BACKOFF`, `current` the default), on the in-memory
store the unit tests share (tests/support/memory_store.py: the repository's write rules and due index).
Only the world around it is simulated here: a population of sessions following the journey mix below,
Klarna's answers to Read Session (the state each journey has reached at the simulated time; 404 once
expired) and Klarna's callbacks (recorded through the one write path a second after each change, unless
the scenario loses them). Time is simulated: it moves while the rate limiter waits for its next grant
(a read takes no simulated time, so one read in flight paces like ten) and between runs. The Klarna
simulator (local/klarna_simulator) is not used: it serves HTTP, far too slowly for millions of reads.

Scenarios: S0 no callback is lost; S1 2% of sessions lose every callback (independently); S2 silent
30-minute windows in which every callback is lost (several windows, 6 hours apart, pooled).

Steady state: sessions arrive for 48 hours (a session lives 47, plus the hour of expiry grace) before
the measured day, and for two hours after it (so late detections are seen). Reads per session = reads
made during the measured day / sessions created during it (in a steady state the two are the same).

Scale: the population and the rate cap are both scaled down (full run 1/10, --quick 1/50), which leaves
reads per session and detection times as they are and every rate proportional; the table and the JSON
show rates at full scale (reads per second = reads in a window of 1/scale seconds).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.klarna import NO_RETRY, KlarnaNotFound, RetryPolicy
from hpp_core.models import DuePage, KlarnaSession, StatusUpdate, WriteOutcome, WriteResult
from hpp_core.poll_schedule import PollSchedule, ScheduleKind
from hpp_core.poller import PollPolicy, PollRunReport, PollThreads, run_poll
from hpp_core.rate_limit import RateLimiter
from tests.support.memory_store import MemorySessionStore, MemoryStateStore

HOUR = 3600.0
DAY = 24 * HOUR
EPOCH = datetime(2026, 3, 2, tzinfo=UTC)
SECRET_HASH = hash_callback_secret("bench")
CALLBACK_DELAY_SECONDS = 1.0
RUN_INTERVAL_SECONDS = 60.0
RUN_TIMEOUT_MS = 60_000  # the function's timeout (template.yaml)
WARM_UP = 48 * HOUR
MEASURED = DAY
TAIL = 2 * HOUR
S2_WINDOW = 30 * 60.0
S2_WINDOW_STARTS = tuple(WARM_UP + offset * HOUR for offset in (2, 8, 14, 20))
FULL_RATE_PER_SECOND = 20.0
POLICIES = {
    "previous": PollSchedule(kind=ScheduleKind.BACKOFF),
    "current": PollSchedule(),
}


@dataclass(frozen=True)
class JourneyMix:
    never_opened: float = 0.30
    open_median_s: float = 300.0
    open_sigma: float = 1.5
    # Of the sessions opened: completed, cancelled, the rest abandoned (open until they expire).
    completed: float = 0.75
    cancelled: float = 0.10
    finish_median_s: float = 120.0
    finish_sigma: float = 1.0
    lifetime_s: float = 47 * HOUR

    def describe(self) -> str:
        opened = 1 - self.never_opened
        return (
            f"journeys: {self.never_opened:.0%} never opened; {opened:.0%} opened after a lognormal delay "
            f"(median {self.open_median_s / 60:g} min, sigma {self.open_sigma:g}), of which "
            f"{self.completed:.0%} complete and {self.cancelled:.0%} cancel a lognormal "
            f"(median {self.finish_median_s / 60:g} min, sigma {self.finish_sigma:g}) after opening, "
            f"{1 - self.completed - self.cancelled:.0%} abandon; lifetime {self.lifetime_s / HOUR:g} h"
        )


@dataclass
class Journey:
    """One session's life at Klarna: created, maybe opened, maybe finished, expired."""

    session_id: str
    kind: str  # never_opened, completed, cancelled, abandoned
    created: float
    opened: float | None
    finished: float | None
    expires: float
    loses_callbacks: bool
    answers: dict[str, KlarnaSession] = field(default_factory=dict)

    def changes(self) -> list[tuple[float, str]]:
        steps = [] if self.opened is None else [(self.opened, "IN_PROGRESS")]
        if self.finished is not None:
            steps.append((self.finished, "COMPLETED" if self.kind == "completed" else "CANCELLED"))
        return steps

    def answer(self, now: float) -> KlarnaSession:
        """What Read Session says at `now` (one model per state, made once)."""
        status, since = "WAITING", self.created
        for at, change in self.changes():
            if now >= at:
                status, since = change, at
        cached = self.answers.get(status)
        if cached is None:
            token = "token-" + self.session_id if status == "COMPLETED" else None
            cached = self.answers[status] = KlarnaSession.model_validate(
                {
                    "session_id": self.session_id,
                    "status": status,
                    "updated_at": at_time(since),
                    "expires_at": at_time(self.expires),
                    "authorization_token": token,
                }
            )
        return cached


def at_time(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=round(seconds, 3))


def draw_journey(rng: random.Random, mix: JourneyMix, ordinal: int, created: float, lose: float) -> Journey:
    opened = finished = None
    kind = "never_opened"
    if rng.random() >= mix.never_opened:
        opened = created + rng.lognormvariate(math.log(mix.open_median_s), mix.open_sigma)
        pick = rng.random()
        kind = (
            "completed"
            if pick < mix.completed
            else "cancelled"
            if pick < mix.completed + mix.cancelled
            else "abandoned"
        )
        if kind != "abandoned":
            finished = opened + rng.lognormvariate(math.log(mix.finish_median_s), mix.finish_sigma)
    expires = created + mix.lifetime_s
    opened = None if opened is not None and opened >= expires else opened
    finished = None if finished is not None and finished >= expires else finished
    if opened is None:
        kind = "never_opened"
    elif finished is None and kind != "abandoned":
        kind = "abandoned"
    return Journey(f"s{ordinal:08d}", kind, created, opened, finished, expires, rng.random() < lose)


class SimClock:
    """Simulated time, and what happens at each moment of it (creations, callbacks)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._lock = threading.Lock()

    def at(self, when: float, action: Callable[[], None]) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._events, (when, self._seq, action))

    def advance_to(self, when: float) -> None:
        while True:
            with self._lock:
                if not self._events or self._events[0][0] > when:
                    self.now = max(self.now, when)
                    return
                moment, _, action = heapq.heappop(self._events)
                self.now = max(self.now, moment)
            action()

    def wait(self, seconds: float) -> bool:
        """The rate limiter's wait: time moves on (never cancelled)."""
        self.advance_to(self.now + seconds)
        return False

    def datetime(self) -> datetime:
        return at_time(self.now)

    def monotonic(self) -> float:
        return self.now


@dataclass(frozen=True)
class Scenario:
    name: str
    sessions_per_day: int
    loses_callbacks: float = 0.0  # S1: the share of sessions that lose every callback
    silent_windows: tuple[float, ...] = ()  # S2: every callback lost from each start, for S2_WINDOW


SCENARIOS = (
    Scenario("S0", 150_000),
    Scenario("S1", 150_000, loses_callbacks=0.02),
    Scenario("S2", 100_000, silent_windows=S2_WINDOW_STARTS),
)


class World:
    """The sessions, Klarna's answers and callbacks around one run of the poller's code."""

    def __init__(self, scenario: Scenario, schedule: PollSchedule, scale: float, seed: int) -> None:
        self.scenario = scenario
        self.scale = scale
        self.clock = SimClock()
        self.store = ObservedStore(self, poll_shards=8, clock=self.clock.datetime, log_writes=False)
        self.state = MemoryStateStore()
        # Smaller pages than the function's, as a scaled-down run polls fewer sessions (the order in which
        # sessions are polled does not depend on the page size).
        self.policy = PollPolicy(
            concurrency=1, rate_per_second=FULL_RATE_PER_SECOND * scale, page_size=20, schedule=schedule
        )
        self.rng = random.Random(f"poll-policy/{seed}/{scenario.name}")
        self.mix = JourneyMix()
        self.journeys: dict[str, Journey] = {}
        self.reads: Counter[str] = Counter()  # per journey kind, during the measured day
        self.read_windows: Counter[int] = Counter()  # reads per window of 1/scale seconds
        self.detected: dict[str, float] = {}  # lost completion -> when the poller recorded it
        self.reports: list[PollRunReport] = []
        self.catch_up_items_read = 0  # index items the catch-up scans read during the measured day
        self.threads = PollThreads(self.policy.concurrency)

    # -- the world -----------------------------------------------------------------------------------

    def measured(self, moment: float) -> bool:
        return WARM_UP <= moment < WARM_UP + MEASURED

    def lost(self, journey: Journey, moment: float) -> bool:
        if journey.loses_callbacks:
            return True
        return any(start <= moment < start + S2_WINDOW for start in self.scenario.silent_windows)

    def create(self, ordinal: int) -> None:
        journey = draw_journey(self.rng, self.mix, ordinal, self.clock.now, self.scenario.loses_callbacks)
        self.journeys[journey.session_id] = journey
        self.store.create_session(
            journey.session_id,
            expires_at=at_time(journey.expires),
            session_url=None,
            callback_secret_hash=SECRET_HASH,
        )
        for moment, _ in journey.changes():
            if not self.lost(journey, moment):
                self.clock.at(moment + CALLBACK_DELAY_SECONDS, partial(self.callback, journey, moment))

    def callback(self, journey: Journey, moment: float) -> None:
        update = StatusUpdate(session=journey.answer(moment), source="callback")
        self.store.record_status(update, callback_secret_hash=SECRET_HASH)

    def read_session(
        self, session_id: str, *, url: str | None = None, retry: RetryPolicy = NO_RETRY
    ) -> KlarnaSession:
        """Klarna's Read Session (hpp_core.ports.KlarnaReader); every session is at the same URL here."""
        journey = self.journeys[session_id]
        now = self.clock.now
        if self.measured(now):
            self.reads[journey.kind] += 1
        self.read_windows[int(now * self.scale)] += 1
        if now >= journey.expires:
            raise KlarnaNotFound("session expired", http_status=404)
        return journey.answer(now)

    # -- the run -------------------------------------------------------------------------------------

    def simulate(self) -> None:
        end = WARM_UP + MEASURED + TAIL
        spacing = DAY / (self.scenario.sessions_per_day * self.scale)
        arrivals = iter(range(sys.maxsize))
        next_arrival = 0.0
        tick = 0.0
        while tick < end:
            while next_arrival < tick + RUN_INTERVAL_SECONDS:
                self.clock.at(next_arrival, partial(self.create, next(arrivals)))
                next_arrival += self.rng.expovariate(1 / spacing)
            self.clock.advance_to(tick)
            self.poll(tick)
            tick = max(tick + RUN_INTERVAL_SECONDS, math.ceil(self.clock.now / RUN_INTERVAL_SECONDS) * 60)

    def poll(self, started: float) -> None:
        limiter = RateLimiter(self.policy.rate_per_second, clock=self.clock.monotonic, wait=self.clock.wait)
        report = run_poll(
            self.store,
            self,
            policy=self.policy,
            remaining_time_ms=lambda: int(RUN_TIMEOUT_MS - (self.clock.now - started) * 1000),
            clock=self.clock.datetime,
            limiter=limiter,
            state=self.state,
            threads=self.threads,
        )
        if self.measured(started):
            self.reports.append(report)

    # -- results -------------------------------------------------------------------------------------

    def row(self, policy: str) -> dict[str, Any]:
        created = Counter(j.kind for j in self.journeys.values() if self.measured(j.created))
        sessions = sum(created.values())
        delays = sorted(self.detection_delays())
        windows = [count for window, count in self.read_windows.items() if self.measured(window / self.scale)]
        return {
            "policy": policy,
            "scenario": self.scenario.name,
            "sessions_per_day": self.scenario.sessions_per_day,
            "reads_per_session": round(sum(self.reads.values()) / sessions, 2),
            "reads_per_session_by_journey": {
                kind: round(self.reads[kind] / created[kind], 2) for kind in sorted(created)
            },
            "peak_reads_per_second": max(windows, default=0),
            "lost_completions": len(delays),
            "detected_within_30min": fraction(delays, 30 * 60),
            "detected_within_60min": fraction(delays, 60 * 60),
            "detect_p50_s": quantile(delays, 0.50),
            "detect_p99_s": quantile(delays, 0.99),
        }

    def detection_delays(self) -> list[float]:
        """Per lost completion during the measured day: seconds until the poller recorded it."""
        delays = []
        for journey in self.journeys.values():
            if journey.kind != "completed" or journey.finished is None or not self.measured(journey.finished):
                continue
            if self.lost(journey, journey.finished):
                delays.append(self.detected.get(journey.session_id, math.inf) - journey.finished)
        return delays

    def extras(self) -> dict[str, Any]:
        """What the table shows besides the row: lag, catch-up, index reads."""
        catch_up_runs = sum(r.catching_up for r in self.reports)
        return {
            "max_lag_s": max((r.oldest_due_lag_seconds for r in self.reports), default=0.0),
            "catch_up_runs": catch_up_runs,
            "catch_up_reads": sum(r.catch_up_reads for r in self.reports) / self.scale,
            # At full scale: the catch-up scans' cost in index items per catch-up run.
            "catch_up_items_per_run": self.catch_up_items_read / self.scale / max(catch_up_runs, 1),
        }


class ObservedStore(MemorySessionStore):
    """The shared in-memory store, noting when the poller records a completion."""

    def __init__(self, world: World, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._world = world

    def due_sessions_page(self, shard: str, **query: Any) -> DuePage:
        page = super().due_sessions_page(shard, **query)
        if query.get("due_after_ms") is not None and self._world.measured(self._world.clock.now):
            self._world.catch_up_items_read += page.scanned_count  # a catch-up's scan
        return page

    def record_status(self, update: StatusUpdate, *, callback_secret_hash: str | None = None) -> WriteResult:
        result = super().record_status(update, callback_secret_hash=callback_secret_hash)
        if (
            result.outcome is WriteOutcome.APPLIED
            and update.status == "COMPLETED"
            and update.source == "poller"
        ):
            self._world.detected.setdefault(update.session_id, self._world.clock.now)
        return result


def fraction(delays: list[float], within: float) -> float | None:
    return round(sum(d <= within for d in delays) / len(delays), 4) if delays else None


def quantile(delays: list[float], q: float) -> float | None:
    if not delays:
        return None
    value = delays[min(len(delays) - 1, int(q * len(delays)))]
    return None if math.isinf(value) else round(value, 1)


def simulate(
    policy: str, scenario: Scenario, scale: float, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    world = World(scenario, POLICIES[policy], scale, seed)
    try:
        world.simulate()
    finally:
        world.threads.close()
    return world.row(policy), world.extras()


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def print_table(results: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    print(
        f"{'policy':9} {'scen':4} {'sessions/day':>12} {'reads/session':>13} {'peak/s':>6} {'max lag':>8} "
        f"{'lost':>5} {'<=30min':>7} {'<=60min':>7} {'p50':>7} {'p99':>8} {'catch-up runs':>13} "
        f"{'items/scan':>10}"
    )
    for row, extra in results:
        print(
            f"{row['policy']:9} {row['scenario']:4} {row['sessions_per_day']:>12,} "
            f"{row['reads_per_session']:>13.2f} {row['peak_reads_per_second']:>6} "
            f"{extra['max_lag_s']:>7.0f}s {row['lost_completions']:>5} "
            f"{percent(row['detected_within_30min']):>7} {percent(row['detected_within_60min']):>7} "
            f"{seconds(row['detect_p50_s']):>7} {seconds(row['detect_p99_s']):>8} "
            f"{extra['catch_up_runs']:>13} {extra['catch_up_items_per_run']:>10.0f}"
        )
        by_journey = ", ".join(f"{k} {v:.1f}" for k, v in row["reads_per_session_by_journey"].items())
        print(f"{'':15}reads per session by journey: {by_journey}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1/50 scale instead of 1/10 (within a minute)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the rows as a JSON list to FILE")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, help="override the scale (e.g. 1 for full size)")
    parser.add_argument("--policy", choices=sorted(POLICIES), action="append", help="only these policies")
    parser.add_argument("--scenario", choices=[s.name for s in SCENARIOS], action="append")
    args = parser.parse_args(argv)
    scale = args.scale or (1 / 50 if args.quick else 1 / 10)
    started = time.perf_counter()
    print(JourneyMix().describe())
    print(
        f"scale 1/{1 / scale:g}: {scale:g} of each population, rate cap {FULL_RATE_PER_SECOND * scale:g}/s "
        f"(shown at full scale: {FULL_RATE_PER_SECOND:g}/s); runs every minute, {RUN_TIMEOUT_MS // 1000} s "
        f"timeout, {PollPolicy().time_margin_seconds:g} s margin"
    )
    runs = [
        (policy, scenario, scale, args.seed)
        for scenario in SCENARIOS
        if not args.scenario or scenario.name in args.scenario
        for policy in POLICIES
        if not args.policy or policy in args.policy
    ]
    # One simulation per process, two at a time (they share nothing).
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(simulate, *zip(*runs, strict=True)))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps([row for row, _ in results], indent=2) + "\n")
    print(f"poll policy simulated in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
