"""The poller's pure rules, its settings, and its run loop on the shared in-memory store and the Klarna
simulator served in memory (no I/O)."""

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hpp_core.klarna import KlarnaClient
from hpp_core.models import DuePage
from hpp_core.poller import (
    PollerSettings,
    PollOutcome,
    PollPolicy,
    StopReason,
    due_sessions,
    expired_stamp_ms,
    expired_update,
    from_epoch_millis,
    poll_interval_seconds,
    poll_session,
    run_poll,
)
from hpp_core.settings import ConfigurationError
from hpp_core.statuses import Status
from hpp_core.timestamps import to_epoch_millis
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import klarna_reads, simulated_klarna
from tests.support.memory_store import MemorySessionStore

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EXPIRES = datetime(2026, 3, 4, 11, 0, tzinfo=UTC)
BASE_ENV = {
    "TABLE_NAME": "sessions",
    "KLARNA_API_URL": "https://api.playground.klarna.com",
    "KLARNA_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:klarna",
}


def test_backoff_is_1_2_4_8_then_every_15_minutes() -> None:
    assert [poll_interval_seconds(n) for n in range(8)] == [60, 120, 240, 480, 900, 900, 900, 900]


def test_backoff_follows_the_configured_first_delay_and_cap() -> None:
    assert [poll_interval_seconds(n, first=10, maximum=100) for n in range(6)] == [10, 20, 40, 80, 100, 100]
    assert poll_interval_seconds(10_000) == 900, "no overflow for a session polled for months"
    assert poll_interval_seconds(-3) == 60


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
        assert (policy.first_interval_seconds, policy.max_interval_seconds) == (60, 900)
        assert (policy.not_found_attempts, policy.expiry_grace_seconds) == (3, 3600)

    def test_values_come_from_their_variables(self) -> None:
        env = BASE_ENV | {
            "POLL_CONCURRENCY": "4",
            "POLL_RATE_PER_SECOND": "5.5",
            "POLL_TIME_MARGIN_SECONDS": "12",
            "FIRST_POLL_DELAY_SECONDS": "30",
            "POLL_MAX_INTERVAL_SECONDS": "600",
            "POLL_NOT_FOUND_ATTEMPTS": "5",
            "EXPIRY_GRACE_SECONDS": "60",
        }
        policy = PollerSettings.from_environment(env).policy()
        assert policy == PollPolicy(
            concurrency=4,
            rate_per_second=5.5,
            time_margin_seconds=12,
            first_interval_seconds=30,
            max_interval_seconds=600,
            not_found_attempts=5,
            expiry_grace_seconds=60,
        )

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("POLL_CONCURRENCY", "0"),
            ("POLL_CONCURRENCY", "64"),
            ("POLL_RATE_PER_SECOND", "-1"),
            ("POLL_RATE_PER_SECOND", "many"),
            ("POLL_NOT_FOUND_ATTEMPTS", "0"),
        ],
    )
    def test_a_bad_value_names_its_variable(self, variable: str, value: str) -> None:
        with pytest.raises(ConfigurationError, match=variable):
            PollerSettings.from_environment(BASE_ENV | {variable: value})

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
    store: MemorySessionStore, klarna: KlarnaClient, policy: PollPolicy = FAST, remaining_ms: int = 60_000
) -> Any:
    return run_poll(store, klarna, policy=policy, remaining_time_ms=lambda: remaining_ms, clock=lambda: NOW)


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
        to_epoch_millis(NOW) + poll_interval_seconds(3) * 1000,
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
