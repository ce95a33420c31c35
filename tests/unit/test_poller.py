"""The poller's pure rules, its settings, and its run loop on the shared in-memory store and the Klarna
simulator served in memory (no I/O)."""

import itertools
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hpp_core.errors import StorageUnavailable
from hpp_core.klarna import KlarnaClient
from hpp_core.models import DuePage, KlarnaSession, PollerState, StatusUpdate
from hpp_core.poll_schedule import EvidenceRule, PollSchedule, ScheduleKind, backoff_interval_seconds
from hpp_core.poller import (
    WRITERS_PER_READER,
    PollerSettings,
    PollOutcome,
    PollPolicy,
    PollThreads,
    StopReason,
    catch_up_candidates,
    due_sessions,
    expired_stamp_ms,
    expired_update,
    from_epoch_millis,
    poll_session,
    run_poll,
)
from hpp_core.rate_limit import RateLimiter
from hpp_core.settings import ConfigurationError
from hpp_core.statuses import Status
from hpp_core.timestamps import to_epoch_millis
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import klarna_reads, simulated_klarna
from tests.support.memory_store import MemorySessionStore, MemoryStateStore

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 3, 4, 11, 0, tzinfo=UTC)
BASE_ENV = {
    "TABLE_NAME": "sessions",
    "STATE_TABLE_NAME": "state",
    "KLARNA_API_URL": "https://api.playground.klarna.com",
    "KLARNA_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:klarna",
}


def test_backoff_is_1_2_4_8_then_every_15_minutes() -> None:
    assert [backoff_interval_seconds(n) for n in range(8)] == [60, 120, 240, 480, 900, 900, 900, 900]


def test_backoff_follows_the_configured_first_delay_and_cap() -> None:
    assert [backoff_interval_seconds(n, first=10, maximum=100) for n in range(6)] == [
        10,
        20,
        40,
        80,
        100,
        100,
    ]
    assert backoff_interval_seconds(10_000) == 900, "no overflow for a session polled for months"
    assert backoff_interval_seconds(-3) == 60


def test_expired_is_stamped_at_expires_at_or_the_last_known_update_if_later() -> None:
    expires_ms = to_epoch_millis(EXPIRES)
    assert expired_stamp_ms(expires_ms) == expires_ms
    assert expired_stamp_ms(expires_ms, None, expires_ms - 5000) == expires_ms
    # Klarna's clock ran ahead of the expires_at it gave: EXPIRED must not look older than its update.
    assert expired_stamp_ms(expires_ms, expires_ms + 2500, None) == expires_ms + 2500


def test_expired_update_is_a_final_status_from_the_poller() -> None:
    update = expired_update("s1", EXPIRES, 0)
    assert (update.status, update.is_final, update.source) == ("EXPIRED", True, "poller")
    assert update.updated_at == "2026-03-04T11:00:00.000Z"
    assert update.expires_at == "2026-03-04T11:00:00.000Z"


def test_epoch_millis_round_trip_exactly() -> None:
    moment = datetime(2019, 5, 13, 14, 54, 4, 675000, tzinfo=UTC)
    assert from_epoch_millis(to_epoch_millis(moment)) == moment


class TestSettings:
    def test_defaults(self) -> None:
        settings = PollerSettings.from_environment(BASE_ENV)
        policy = settings.policy()
        assert (policy.concurrency, policy.rate_per_second, policy.time_margin_seconds) == (10, 20.0, 10.0)
        assert (policy.not_found_attempts, policy.expiry_grace_seconds) == (3, 3600)
        assert policy.schedule == PollSchedule()
        assert settings.state_table_name == "state"

    def test_values_come_from_their_variables(self) -> None:
        env = BASE_ENV | {
            "POLL_CONCURRENCY": "4",
            "POLL_RATE_PER_SECOND": "5.5",
            "POLL_TIME_MARGIN_SECONDS": "12",
            "FIRST_POLL_DELAY_SECONDS": "30",
            "POLL_SCHEDULE": "backoff",
            "POLL_MAX_INTERVAL_SECONDS": "600",
            "POLL_TIGHT_INTERVAL_SECONDS": "900",
            "POLL_EVIDENCE_ON_PERCENT": "5",
            "POLL_EVIDENCE_OFF_PERCENT": "2.5",
            "POLL_CATCH_UP_SHARE": "0.25",
            "POLL_NOT_FOUND_ATTEMPTS": "5",
            "EXPIRY_GRACE_SECONDS": "60",
        }
        policy = PollerSettings.from_environment(env).policy()
        assert policy == PollPolicy(
            concurrency=4,
            rate_per_second=5.5,
            time_margin_seconds=12,
            not_found_attempts=5,
            expiry_grace_seconds=60,
            schedule=PollSchedule(
                kind=ScheduleKind.BACKOFF,
                first_interval_seconds=30,
                max_interval_seconds=600,
                tight_cap_seconds=900,
                catch_up_share=0.25,
                evidence=EvidenceRule(on_percent=5, off_percent=2.5),
            ),
        )

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("POLL_CONCURRENCY", "0"),
            ("POLL_CONCURRENCY", "64"),
            ("POLL_RATE_PER_SECOND", "-1"),
            ("POLL_RATE_PER_SECOND", "many"),
            ("POLL_NOT_FOUND_ATTEMPTS", "0"),
            ("POLL_SCHEDULE", "sometimes"),
            ("POLL_TIGHT_INTERVAL_SECONDS", "10"),
            ("POLL_EVIDENCE_ON_PERCENT", "0"),
            ("POLL_CATCH_UP_SHARE", "1.5"),
            ("STATE_TABLE_NAME", ""),
        ],
    )
    def test_a_bad_value_names_its_variable(self, variable: str, value: str) -> None:
        with pytest.raises(ConfigurationError, match=variable):
            PollerSettings.from_environment(BASE_ENV | {variable: value})

    def test_the_evidence_must_fall_below_where_it_rose_to_stop_catching_up(self) -> None:
        env = BASE_ENV | {"POLL_EVIDENCE_ON_PERCENT": "2", "POLL_EVIDENCE_OFF_PERCENT": "3"}
        with pytest.raises(ConfigurationError, match=r"POLL_EVIDENCE_OFF_PERCENT.*POLL_EVIDENCE_ON_PERCENT"):
            PollerSettings.from_environment(env)

    def test_the_margin_must_outlast_a_klarna_call(self) -> None:
        env = BASE_ENV | {"POLL_TIME_MARGIN_SECONDS": "2", "KLARNA_TIMEOUT_SECONDS": "3"}
        with pytest.raises(ConfigurationError, match=r"POLL_TIME_MARGIN_SECONDS.*KLARNA_TIMEOUT_SECONDS"):
            PollerSettings.from_environment(env)


# -- the run loop, on the in-memory store ----------------------------------------------------------

FIRST_DELAY = timedelta(seconds=60)


def store_with(*late: tuple[str, float], shards: int = 1) -> MemorySessionStore:
    """Sessions created by the tracker, each due `minutes` before NOW (the store's clock is NOW after)."""
    store = MemorySessionStore(poll_shards=shards)
    for session_id, minutes in late:
        store.clock = fixed(NOW - timedelta(minutes=minutes) - FIRST_DELAY)
        store.create_session(session_id, expires_at=EXPIRES, session_url=None, callback_secret_hash=None)
    store.clock = fixed(NOW)
    return store


def fixed(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def status_of(store: MemorySessionStore, session_id: str) -> str | None:
    session = store.get_session(session_id)
    return None if session is None else session.status


@pytest.fixture
def simulator() -> KlarnaSimulator:
    """Klarna with its clock standing at NOW."""
    return simulated_klarna(clock=lambda: NOW)


def klarna_knows(simulator: KlarnaSimulator, *session_ids: str) -> None:
    """Klarna has each session IN_PROGRESS since 5 s ago: news for the tracker, which has it WAITING."""
    for session_id in session_ids:
        simulator.add_session(
            session_id, status="IN_PROGRESS", updated_at=NOW - timedelta(seconds=5), expires_at=EXPIRES
        )


FAST = PollPolicy(concurrency=3, rate_per_second=1000, time_margin_seconds=1)


def run(
    store: MemorySessionStore,
    klarna: KlarnaClient,
    policy: PollPolicy = FAST,
    remaining_ms: int = 60_000,
    threads: PollThreads | None = None,
) -> Any:
    return run_poll(
        store,
        klarna,
        policy=policy,
        remaining_time_ms=lambda: remaining_ms,
        clock=lambda: NOW,
        threads=threads,
    )


def test_due_sessions_come_oldest_first_over_all_shards_page_by_page() -> None:
    store = store_with(*((f"s{n}", n) for n in range(1, 10)), shards=3)
    pages: list[DuePage] = []
    found = due_sessions(store, due_by_ms=to_epoch_millis(NOW), page_size=2, on_page=pages.append)
    first = next(found)
    assert first.session_id == "s9"
    assert len(pages) == 3, "one page per shard to start with: nothing is read ahead of need"
    rest = list(found)
    assert [first.session_id] + [d.session_id for d in rest] == [f"s{n}" for n in range(9, 0, -1)]
    assert {d.poll_shard for d in [first, *rest]} == {"00", "01", "02"}, "the sessions span every shard"
    assert sum(page.scanned_count for page in pages) == 9


def test_a_run_polls_every_due_session_and_reports_its_lag(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with(*((f"s{n}", n) for n in range(1, 10)), shards=3)
    klarna_knows(simulator, *(f"s{n}" for n in range(1, 10)))
    report = run(store, klarna, replace(FAST, page_size=2))
    assert sorted(klarna_reads(simulator)) == sorted(f"s{n}" for n in range(1, 10))
    assert report.due == report.index_items_read == 9
    assert report.outcomes[PollOutcome.CHANGED] == 9
    assert report.oldest_due_lag_seconds == pytest.approx(9 * 60)
    assert report.stopped is None
    assert {status_of(store, f"s{n}") for n in range(1, 10)} == {"IN_PROGRESS"}


def test_nothing_due_is_a_quiet_run(simulator: KlarnaSimulator, klarna: KlarnaClient) -> None:
    klarna_knows(simulator, "later")
    report = run(store_with(("later", -5)), klarna)
    assert (report.due, report.index_items_read, report.oldest_due_lag_seconds) == (0, 0, 0.0)
    assert simulator.requests == []


def test_a_bug_on_one_session_costs_that_session_only(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with(("s1", 1), ("s2", 1), ("s3", 1))
    klarna_knows(simulator, "s1", "s2", "s3")
    store.fail_next("record_status", RuntimeError("boom"))  # whichever session is recorded first
    report = run(store, klarna)
    assert report.errors == {"Unexpected": 1}
    assert report.outcomes[PollOutcome.CHANGED] == 2
    (problem,) = report.problems
    assert status_of(store, problem.session_id) == "WAITING"
    assert {status_of(store, s) for s in {"s1", "s2", "s3"} - {problem.session_id}} == {"IN_PROGRESS"}


def test_a_klarna_error_backs_the_session_off(simulator: KlarnaSimulator, klarna: KlarnaClient) -> None:
    store = store_with(("s1", 1))
    for _ in range(2):  # two polls that found nothing new
        (due,) = store.due_sessions_page("00", due_by_ms=to_epoch_millis(NOW), limit=10).sessions
        assert store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(NOW) - 1)
    klarna_knows(simulator, "s1")
    simulator.fail_next("GET", simulator.session_url("s1"), status=503)
    report = run(store, klarna)
    assert report.errors == {"KlarnaUnavailable": 1}
    assert report.outcomes[PollOutcome.ERROR] == 1
    backed_off = store.due_session("s1")
    assert backed_off is not None
    assert (backed_off.poll_due_at, backed_off.poll_attempts) == (
        to_epoch_millis(NOW) + backoff_interval_seconds(3) * 1000,
        3,
    )


def test_no_time_left_means_no_session_is_started(simulator: KlarnaSimulator, klarna: KlarnaClient) -> None:
    klarna_knows(simulator, "s1")
    report = run(store_with(("s1", 1)), klarna, remaining_ms=500)
    assert simulator.requests == []
    assert report.stopped is StopReason.TIME_BUDGET
    assert report.due == 0


def test_a_session_final_in_the_index_copy_is_not_polled(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with(("s1", 1))
    klarna_knows(simulator, "s1")
    due = store.due_session("s1")
    assert due is not None
    result = poll_session(
        replace(due, status=Status.COMPLETED.value), store=store, klarna=klarna, policy=FAST
    )
    assert simulator.requests == []
    assert result.outcome is PollOutcome.SUPERSEDED
    assert store.writes == []


def test_summary_is_json_friendly(simulator: KlarnaSimulator, klarna: KlarnaClient) -> None:
    klarna_knows(simulator, "s1")
    report = run(store_with(("s1", 1)), klarna)
    summary = report.summary()
    assert summary["outcomes"] == {"changed": 1}
    assert summary["read_from_klarna"] == 1
    assert summary["stopped"] is None


# -- the run's readers and writers: Klarna reads and DynamoDB writes on separate threads --------------


class StalledWrites(MemorySessionStore):
    """A store whose writes wait until released, as a DynamoDB that has stopped answering would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.released = threading.Event()
        self.waiting = threading.Semaphore(0)

    def record_status(self, update: StatusUpdate, *, callback_secret_hash: str | None = None) -> Any:
        self.waiting.release()
        self.released.wait()
        return super().record_status(update, callback_secret_hash=callback_secret_hash)


class CountedKlarna:
    """Klarna reads counted, with the most made while the store's writes were stalled."""

    def __init__(self, klarna: KlarnaClient, store: StalledWrites) -> None:
        self._klarna = klarna
        self._store = store
        self.reads = 0
        self.reads_while_stalled = 0
        self.ran_ahead = threading.Event()
        self._lock = threading.Lock()

    def read_session(self, session_id: str, **kwargs: Any) -> KlarnaSession:
        with self._lock:
            self.reads += 1
            if not self._store.released.is_set():
                self.reads_while_stalled = self.reads
                if self.reads > BOUND_ON_UNRECORDED_READS:
                    self.ran_ahead.set()
        return self._klarna.read_session(session_id, **kwargs)


# Reads in flight, and the answers waiting for a writer or being written.
BOUND_ON_UNRECORDED_READS = FAST.concurrency * (1 + WRITERS_PER_READER)


def test_a_stalled_dynamodb_holds_klarna_reads_back(simulator: KlarnaSimulator, klarna: KlarnaClient) -> None:
    store = StalledWrites(poll_shards=1, clock=fixed(NOW - FIRST_DELAY))
    sessions = [f"s{n}" for n in range(40)]
    for session_id in sessions:
        store.create_session(session_id, expires_at=EXPIRES, session_url=None, callback_secret_hash=None)
    klarna_knows(simulator, *sessions)
    counted = CountedKlarna(klarna, store)
    reports: list[Any] = []
    running = threading.Thread(
        target=lambda: reports.append(
            run_poll(store, counted, policy=FAST, remaining_time_ms=lambda: 60_000, clock=lambda: NOW)
        )
    )
    running.start()
    for _ in range(FAST.concurrency * WRITERS_PER_READER):  # every writer is stuck in a write
        assert store.waiting.acquire(timeout=30)
    # Time for the readers to run ahead if nothing held them back (a bound, not a measurement).
    counted.ran_ahead.wait(timeout=0.5)
    store.released.set()
    running.join(timeout=60)
    assert not running.is_alive()
    assert counted.reads_while_stalled <= BOUND_ON_UNRECORDED_READS
    (report,) = reports
    assert report.outcomes == {PollOutcome.CHANGED: 40}, "held back, then every session read and recorded"
    assert {status_of(store, s) for s in sessions} == {"IN_PROGRESS"}


@pytest.mark.parametrize("failing_write", ["record_status", "reschedule_poll"])
def test_a_write_dynamodb_refuses_leaves_that_session_due_and_the_others_recorded(
    simulator: KlarnaSimulator, klarna: KlarnaClient, failing_write: str
) -> None:
    sessions = ("s1", "s2", "s3")
    if failing_write == "record_status":  # Klarna has news: the write is the change
        store = store_with(*((s, 1) for s in sessions))
        klarna_knows(simulator, *sessions)
    else:  # nothing new: the write is the reschedule
        store = MemorySessionStore(poll_shards=1, clock=fixed(NOW))
        for session_id in sessions:
            quiet_session(store, simulator, session_id, quiet=timedelta(minutes=10), due_in=-FIRST_DELAY)
    before = {s: store.due_session(s) for s in sessions}
    store.fail_next(failing_write, StorageUnavailable("DynamoDB refused the write"))
    report = run(store, klarna)
    assert report.errors == {"StorageUnavailable": 1}
    assert report.outcomes[PollOutcome.ERROR] == 1
    assert sum(report.outcomes.values()) == report.due == 3
    (problem,) = report.problems
    assert store.due_session(problem.session_id) == before[problem.session_id], "still due, as it was"
    for session_id in set(before) - {problem.session_id}:
        assert store.due_session(session_id) != before[session_id], "recorded: changed or rescheduled"


def test_every_session_taken_is_counted_once_when_the_time_runs_out(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    sessions = [f"s{n}" for n in range(60)]
    store = store_with(*((s, 1) for s in sessions))
    klarna_knows(simulator, *sessions)
    calls = itertools.count()
    report = run_poll(  # time runs out after 40 looks at the clock, with sessions in hand and in flight
        store,
        klarna,
        policy=FAST,
        remaining_time_ms=lambda: 60_000 if next(calls) < 40 else 0,
        clock=lambda: NOW,
    )
    assert report.stopped is StopReason.TIME_BUDGET
    read = set(klarna_reads(simulator))
    assert 0 < len(read) < len(sessions)
    assert report.outcomes == {PollOutcome.CHANGED: len(read), PollOutcome.LEFT_DUE: report.due - len(read)}
    assert {status_of(store, s) for s in read} == {"IN_PROGRESS"}
    assert {status_of(store, s) for s in set(sessions) - read} == {"WAITING"}


class IndexFailsOnSecondPage(MemorySessionStore):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pages = itertools.count(1)

    def due_sessions_page(self, shard: str, **kwargs: Any) -> DuePage:
        if next(self.pages) == 2:
            raise StorageUnavailable("DynamoDB refused the query")
        return super().due_sessions_page(shard, **kwargs)


def test_a_due_index_that_fails_fails_the_run_and_leaves_no_thread_waiting(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    sessions = [f"s{n}" for n in range(1, 10)]
    store = IndexFailsOnSecondPage(poll_shards=1, clock=fixed(NOW - FIRST_DELAY))
    for session_id in sessions:
        store.create_session(session_id, expires_at=EXPIRES, session_url=None, callback_secret_hash=None)
    store.clock = fixed(NOW)
    klarna_knows(simulator, *sessions)
    threads = PollThreads(FAST.concurrency)  # as a warm Lambda keeps them from run to run
    outcomes: list[Any] = []

    def two_runs() -> None:
        with pytest.raises(StorageUnavailable):
            run(store, klarna, replace(FAST, page_size=2), threads=threads)
        outcomes.append({s: status_of(store, s) for s in sessions})
        outcomes.append(run(store, klarna, threads=threads).outcomes)

    runs = threading.Thread(target=two_runs)
    runs.start()
    runs.join(timeout=60)  # a hang detector, not a measurement
    assert not runs.is_alive(), "the second run found the threads still held by the first"
    threads.close()
    after_failure, second = outcomes
    assert sorted(after_failure.values()) == ["IN_PROGRESS"] * 2 + ["WAITING"] * 7, (
        "the first page's sessions were read and recorded before the run failed"
    )
    assert second == {PollOutcome.CHANGED: 7}


# -- lost callbacks: the evidence, the tight schedule and the catch-up ------------------------------

MINUTE_MS = 60_000
CATCHING_UP = PollerState(
    unreported_changes=50, reads=500, updated_at_ms=to_epoch_millis(NOW) - MINUTE_MS, catching_up=True
)


def quiet_session(
    store: MemorySessionStore,
    simulator: KlarnaSimulator,
    session_id: str,
    *,
    quiet: timedelta,
    due_in: timedelta,
    status: str = "WAITING",
) -> None:
    """A session Klarna last reported on `quiet` ago (nothing new since), due `due_in` from NOW."""
    updated_at = NOW - quiet
    simulator.add_session(session_id, status=status, updated_at=updated_at, expires_at=EXPIRES)
    session = KlarnaSession(session_id=session_id, status=status, updated_at=updated_at, expires_at=EXPIRES)
    store.record_status(StatusUpdate(session=session, source="klarna_read"))
    entry = store.due_session(session_id)
    assert entry is not None
    assert store.reschedule_poll(entry, next_due_at_ms=to_epoch_millis(NOW + due_in))


def next_due_in(store: MemorySessionStore, session_id: str) -> timedelta:
    entry = store.due_session(session_id)
    assert entry is not None
    return timedelta(milliseconds=entry.poll_due_at - to_epoch_millis(NOW))


def test_a_read_that_finds_a_change_no_callback_reported_is_evidence(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with(("lost", 1), ("first-look", 1), ("reported", 1))
    klarna_knows(simulator, "lost", "reported")  # IN_PROGRESS at Klarna
    simulator.add_session("first-look", status="WAITING", updated_at=NOW - timedelta(minutes=2))
    # The callback for "reported" arrived; "first-look" is Klarna's own WAITING, seen for the first time.
    store.clock = fixed(NOW - timedelta(minutes=2))
    store.record_status(
        StatusUpdate(session=KlarnaSession.model_validate(simulator.read_body("reported")), source="callback")
    )
    store.clock = fixed(NOW)
    state = MemoryStateStore()
    report = run_poll(
        store, klarna, policy=FAST, remaining_time_ms=lambda: 60_000, clock=lambda: NOW, state=state
    )
    assert report.outcomes[PollOutcome.CHANGED] == 2  # "lost" and "first-look"
    assert report.unreported_changes == 1
    assert state.saved == [
        PollerState(unreported_changes=1, reads=3, updated_at_ms=to_epoch_millis(NOW), catching_up=False)
    ]
    assert report.evidence_percent == pytest.approx(1.0)  # one of (at least) 100 recent reads
    assert report.summary()["unreported_changes"] == 1


def young_sessions_scheduled_late_and_others(simulator: KlarnaSimulator) -> MemorySessionStore:
    """Three young sessions due in 55 minutes (quiet 30 min, 2 h, 4 h), one young but due within the
    tight interval, and one quiet for 8 hours (old)."""
    store = store_with()
    for name, quiet in (
        ("2h", timedelta(hours=2)),
        ("30min", timedelta(minutes=30)),
        ("4h", timedelta(hours=4)),
    ):
        quiet_session(store, simulator, name, quiet=quiet, due_in=timedelta(minutes=55))
    quiet_session(store, simulator, "tight-already", quiet=timedelta(hours=1), due_in=timedelta(minutes=15))
    quiet_session(store, simulator, "old", quiet=timedelta(hours=8), due_in=timedelta(minutes=30))
    return store


def test_while_catching_up_a_run_reads_young_sessions_early_most_recent_first(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = young_sessions_scheduled_late_and_others(simulator)
    quiet_session(
        store,
        simulator,
        "opened",
        quiet=timedelta(hours=2),
        due_in=timedelta(minutes=40),
        status="IN_PROGRESS",
    )
    quiet_session(store, simulator, "due", quiet=timedelta(hours=3), due_in=-timedelta(minutes=1))
    state = MemoryStateStore(CATCHING_UP)
    report = run_poll(
        store,
        klarna,
        policy=replace(FAST, concurrency=1),
        remaining_time_ms=lambda: 60_000,
        clock=lambda: NOW,
        state=state,
    )
    assert sorted(klarna_reads(simulator)) == ["2h", "30min", "4h", "due"]
    assert (report.catching_up, report.due, report.catch_up_reads) == (True, 1, 3)
    assert report.outcomes == {PollOutcome.UNCHANGED: 4}
    # Tight: every young session read is next due within 20 minutes; the others keep their schedule.
    assert {name: next_due_in(store, name) for name in ("30min", "2h", "4h", "due")} == dict.fromkeys(
        ("30min", "2h", "4h", "due"), timedelta(minutes=20)
    )
    assert next_due_in(store, "old") == timedelta(minutes=30)
    assert next_due_in(store, "tight-already") == timedelta(minutes=15)
    assert next_due_in(store, "opened") == timedelta(minutes=40), "opened 2 h ago: old, not caught up"
    assert state.state is not None
    assert state.state.reads == pytest.approx(500 * 0.5 ** (60 / 300) + 4)  # aged a minute, plus 4


def test_catch_up_candidates_are_the_young_sessions_scheduled_late_most_recent_first(
    simulator: KlarnaSimulator,
) -> None:
    store = young_sessions_scheduled_late_and_others(simulator)
    quiet_session(store, simulator, "later", quiet=timedelta(hours=3), due_in=timedelta(minutes=61))
    quiet_session(store, simulator, "due", quiet=timedelta(hours=3), due_in=-timedelta(minutes=1))
    pages: list[DuePage] = []
    found = catch_up_candidates(store, PollSchedule(), now_ms=to_epoch_millis(NOW), on_page=pages.append)
    assert [due.session_id for due in found] == ["30min", "2h", "4h"]
    # The scan reads what is due within the hour (a young session's longest interval), updated in the
    # last 5 hours: neither the due session, nor one due later, nor ("old") one quiet longer is returned.
    assert sum(page.scanned_count for page in pages) == 5  # 30min, 2h, 4h, tight-already, old


def test_without_evidence_the_same_sessions_wait_for_their_schedule(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with()
    quiet_session(store, simulator, "2h", quiet=timedelta(hours=2), due_in=timedelta(minutes=55))
    quiet_session(store, simulator, "due", quiet=timedelta(hours=3), due_in=-timedelta(minutes=1))
    state = MemoryStateStore(replace_state(CATCHING_UP, catching_up=False))
    report = run_poll(
        store, klarna, policy=FAST, remaining_time_ms=lambda: 60_000, clock=lambda: NOW, state=state
    )
    assert klarna_reads(simulator) == ["due"]
    assert (report.catching_up, report.catch_up_reads) == (False, 0)
    assert next_due_in(store, "due") == timedelta(hours=1), "young, quiet 3 h: an hour"


def replace_state(state: PollerState, **changes: Any) -> PollerState:
    return state.model_copy(update=changes)


class FakeTime:
    """A monotonic clock that moves only while the rate limiter waits (a read takes no time)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.now += seconds
        return False


class TimedKlarna:
    """Klarna's reads, noting when each was made on the fake clock."""

    def __init__(self, klarna: KlarnaClient, time: FakeTime) -> None:
        self.klarna, self.time = klarna, time
        self.at: list[tuple[float, str]] = []

    def read_session(self, session_id: str, **kwargs: Any) -> KlarnaSession:
        self.at.append((self.time.now, session_id))
        return self.klarna.read_session(session_id, **kwargs)


def test_a_catch_up_stays_under_the_rate_cap_and_leaves_due_sessions_their_share(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with()
    for n in range(20):
        quiet_session(
            store, simulator, f"due-{n:02d}", quiet=timedelta(hours=3), due_in=-timedelta(minutes=n + 1)
        )
        quiet_session(
            store, simulator, f"young-{n:02d}", quiet=timedelta(hours=2), due_in=timedelta(minutes=50)
        )
    fake = FakeTime()
    timed = TimedKlarna(klarna, fake)
    policy = PollPolicy(concurrency=1, rate_per_second=10, time_margin_seconds=1)  # 10/s, 2 s of reads
    report = run_poll(
        store,
        timed,
        policy=policy,
        remaining_time_ms=lambda: int(3_000 - fake.now * 1000),
        clock=lambda: NOW,
        limiter=RateLimiter(10, clock=fake.monotonic, wait=fake.sleep),
        state=MemoryStateStore(CATCHING_UP),
    )
    times = [at for at, _ in timed.at]
    # A read every 1/9.5 s (the limiter's headroom under 10/s) in the 2 s before the margin, catch-up or not.
    assert len(times) == 19
    assert min(later - earlier for earlier, later in itertools.pairwise(times)) >= 1 / 9.5 - 1e-9
    assert report.stopped is StopReason.TIME_BUDGET
    caught_up = [name for _, name in timed.at if name.startswith("young")]
    polled_due = [name for _, name in timed.at if name.startswith("due")]
    assert report.catch_up_reads == len(caught_up)
    assert abs(len(caught_up) - len(polled_due)) <= 1, "catch-up takes half the reads while due ones wait"
    # The due sessions were taken oldest first; those taken but not read (in hand when the time was up)
    # stay due, and say so.
    assert set(polled_due) <= {f"due-{n:02d}" for n in range(19, 19 - report.due, -1)}
    assert report.outcomes[PollOutcome.LEFT_DUE] == report.due - len(polled_due) <= 2


def test_a_run_goes_on_without_its_state_and_leaves_it_alone(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with()
    quiet_session(store, simulator, "2h", quiet=timedelta(hours=2), due_in=timedelta(minutes=55))
    quiet_session(store, simulator, "due", quiet=timedelta(hours=3), due_in=-timedelta(minutes=1))
    state = MemoryStateStore(CATCHING_UP)
    state.fail_next("poller_state", StorageUnavailable("state table down"))
    report = run_poll(
        store, klarna, policy=FAST, remaining_time_ms=lambda: 60_000, clock=lambda: NOW, state=state
    )
    assert klarna_reads(simulator) == ["due"], "no evidence to go by: the normal schedule"
    assert (report.catching_up, report.state, report.evidence_percent) == (False, None, None)
    assert state.saved == [], "what it could not read, it does not overwrite"


def test_a_state_that_cannot_be_saved_is_reported(simulator: KlarnaSimulator, klarna: KlarnaClient) -> None:
    store = store_with(("s1", 1))
    klarna_knows(simulator, "s1")
    state = MemoryStateStore()
    state.fail_next("save_poller_state", StorageUnavailable("state table down"))
    report = run_poll(
        store, klarna, policy=FAST, remaining_time_ms=lambda: 60_000, clock=lambda: NOW, state=state
    )
    assert report.outcomes[PollOutcome.CHANGED] == 1
    assert report.errors == {"StateUnavailable": 1}
    assert (report.state, report.evidence_percent) == (None, None)


def test_the_previous_backoff_never_catches_up_nor_touches_the_state(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with()
    quiet_session(store, simulator, "2h", quiet=timedelta(hours=2), due_in=timedelta(minutes=55))
    state = MemoryStateStore(CATCHING_UP)
    state.fail_next("poller_state", AssertionError("the backoff has no use for the state"))
    backoff = replace(FAST, schedule=PollSchedule(kind=ScheduleKind.BACKOFF))
    report = run_poll(
        store, klarna, policy=backoff, remaining_time_ms=lambda: 60_000, clock=lambda: NOW, state=state
    )
    assert (klarna_reads(simulator), report.catching_up, state.saved) == ([], False, [])
