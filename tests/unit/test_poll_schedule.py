"""The poller's schedule rules (hpp_core.poll_schedule): the interval by state and quiet time, the expiry
clamp, the previous backoff, the tight schedule and what a catch-up reads, and the evidence of lost
callbacks that turns the tight schedule on and off."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpp_core.models import DueSession, PollerState
from hpp_core.poll_schedule import (
    EvidenceRule,
    PollSchedule,
    ScheduleKind,
    evidence_percent,
    next_poller_state,
)

NOW_MS = 1_772_452_800_000  # 2026-03-02T12:00:00Z
MINUTE = 60_000
HOUR = 60 * MINUTE
SCHEDULE = PollSchedule()
RULE = EvidenceRule()


def due(
    *, status: str | None = "WAITING", quiet_ms: int | None = 0, attempts: int = 3, due_in_ms: int = 0
) -> DueSession:
    """A session quiet for `quiet_ms` (Klarna's updated_at that long ago; None: never reported on)."""
    return DueSession(
        session_id="s1",
        poll_shard="00",
        poll_due_at=NOW_MS + due_in_ms,
        poll_attempts=attempts,
        poll_not_found=0,
        status=status,
        updated_at_ms=None if quiet_ms is None else NOW_MS - quiet_ms,
        expires_at=None,
    )


def interval(session: DueSession, *, tight: bool = False, schedule: PollSchedule = SCHEDULE) -> int:
    return schedule.next_due_at_ms(session, NOW_MS, tight=tight) - NOW_MS


# -- by state and quiet time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quiet", "expected"),
    [
        (0, MINUTE),  # just changed: the shortest interval
        (30_000, MINUTE),
        (2 * MINUTE, 2 * MINUTE),  # young: as long as it has been quiet (the interval doubles)
        (10 * MINUTE, 10 * MINUTE),
        (59 * MINUTE, 59 * MINUTE),
        (90 * MINUTE, HOUR),  # young, at most an hour apart
        (4 * HOUR + 59 * MINUTE, HOUR),
        (5 * HOUR, 20 * HOUR),  # old (nobody opened it in 5 hours): four times its quiet time
        (20 * HOUR, 80 * HOUR),
    ],
)
def test_a_session_nobody_opened_is_read_by_how_long_it_has_waited(quiet: int, expected: int) -> None:
    assert interval(due(status="WAITING", quiet_ms=quiet)) == expected


@pytest.mark.parametrize("status", ["IN_PROGRESS", "FAILED", "BACK", "ERROR", "MANUAL_ID_CHECK", "NEW_ONE"])
@pytest.mark.parametrize(
    ("quiet", "expected"),
    [
        (MINUTE, MINUTE),
        (4 * MINUTE, 4 * MINUTE),
        (45 * MINUTE, 30 * MINUTE),  # young for an hour, at most half an hour apart
        (HOUR, 4 * HOUR),  # then old: a consumer who opened the page finishes within minutes
        (3 * HOUR, 12 * HOUR),
    ],
)
def test_a_session_heard_from_is_read_by_how_long_since_it_last_changed(
    status: str, quiet: int, expected: int
) -> None:
    assert interval(due(status=status, quiet_ms=quiet)) == expected


def test_klarnas_clock_ahead_of_ours_is_the_shortest_interval() -> None:
    assert interval(due(quiet_ms=-5 * MINUTE)) == MINUTE


def test_a_session_klarna_has_not_reported_on_backs_off_as_before() -> None:
    """No updated_at from Klarna yet (the tracker's own WAITING): no quiet time to go by."""
    assert [interval(due(quiet_ms=None, attempts=n)) for n in range(6)] == [
        2 * MINUTE,
        4 * MINUTE,
        8 * MINUTE,
        15 * MINUTE,
        15 * MINUTE,
        15 * MINUTE,
    ]


def test_the_previous_backoff_ignores_the_quiet_time() -> None:
    backoff = PollSchedule(kind=ScheduleKind.BACKOFF)
    for quiet in (0, 10 * MINUTE, 20 * HOUR):
        intervals = [interval(due(quiet_ms=quiet, attempts=n), schedule=backoff) for n in range(-1, 5)]
        assert intervals == [MINUTE, 2 * MINUTE, 4 * MINUTE, 8 * MINUTE, 15 * MINUTE, 15 * MINUTE]
    assert interval(due(quiet_ms=HOUR), schedule=backoff, tight=True) == 15 * MINUTE, "it never tightens"
    assert not backoff.catches_up


def test_the_first_interval_is_the_floor_of_every_interval() -> None:
    slow_start = replace(SCHEDULE, first_interval_seconds=300)
    assert interval(due(quiet_ms=2 * MINUTE), schedule=slow_start) == 5 * MINUTE
    assert interval(due(quiet_ms=2 * MINUTE), schedule=slow_start, tight=True) == 5 * MINUTE


# -- expiry ---------------------------------------------------------------------------------------


def test_the_next_read_is_never_much_later_than_the_expiry() -> None:
    old = due(quiet_ms=20 * HOUR)  # 80 hours to the next read, on the curve alone
    expires = NOW_MS + 3 * HOUR
    assert SCHEDULE.next_due_at_ms(old, NOW_MS, tight=False, expires_at_ms=expires) == expires + MINUTE


def test_past_the_expiry_the_next_read_is_still_a_minute_away() -> None:
    old = due(quiet_ms=20 * HOUR)
    expired = NOW_MS - HOUR
    assert SCHEDULE.next_due_at_ms(old, NOW_MS, tight=False, expires_at_ms=expired) == NOW_MS + MINUTE


# -- the tight schedule and the catch-up -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "quiet", "normal", "tight"),
    [
        ("WAITING", 10 * MINUTE, 10 * MINUTE, 10 * MINUTE),  # already read more often than the cap
        ("WAITING", 40 * MINUTE, 40 * MINUTE, 20 * MINUTE),
        ("WAITING", 4 * HOUR, HOUR, 20 * MINUTE),
        ("WAITING", 6 * HOUR, 24 * HOUR, 24 * HOUR),  # old: unlikely to change, not tightened
        ("IN_PROGRESS", 25 * MINUTE, 25 * MINUTE, 20 * MINUTE),
        ("IN_PROGRESS", 2 * HOUR, 8 * HOUR, 8 * HOUR),
    ],
)
def test_tight_reads_every_young_session_at_least_every_20_minutes(
    status: str, quiet: int, normal: int, tight: int
) -> None:
    session = due(status=status, quiet_ms=quiet)
    assert (interval(session), interval(session, tight=True)) == (normal, tight)


def test_a_catch_up_wants_the_young_sessions_scheduled_later_than_the_tight_schedule() -> None:
    # Young and due in 50 minutes, where the tight schedule reads it every 20: bring it forward.
    assert SCHEDULE.wants_sooner(due(quiet_ms=2 * HOUR, due_in_ms=50 * MINUTE), NOW_MS)
    # Already on the tight schedule (or tighter): nothing to catch up.
    assert not SCHEDULE.wants_sooner(due(quiet_ms=2 * HOUR, due_in_ms=20 * MINUTE), NOW_MS)
    assert not SCHEDULE.wants_sooner(due(quiet_ms=5 * MINUTE, due_in_ms=5 * MINUTE), NOW_MS)
    # Old: unlikely to have changed, left to its schedule.
    assert not SCHEDULE.wants_sooner(due(quiet_ms=6 * HOUR, due_in_ms=10 * HOUR), NOW_MS)
    assert not SCHEDULE.wants_sooner(due(status="IN_PROGRESS", quiet_ms=2 * HOUR, due_in_ms=HOUR), NOW_MS)
    # Klarna never reported on it: its backoff is short anyway.
    assert not SCHEDULE.wants_sooner(due(quiet_ms=None, due_in_ms=15 * MINUTE), NOW_MS)


def test_a_catch_up_looks_as_far_ahead_as_a_young_session_can_be_due() -> None:
    assert SCHEDULE.catch_up_lookahead_ms == HOUR
    assert SCHEDULE.young_for_at_most_ms == 5 * HOUR


@given(
    status=st.sampled_from(["WAITING", "IN_PROGRESS", "FAILED", "SOMETHING_NEW", None]),
    quiet=st.one_of(st.none(), st.integers(min_value=-HOUR, max_value=60 * 24 * HOUR)),
    attempts=st.integers(min_value=0, max_value=10_000),
    expires_in=st.one_of(st.none(), st.integers(min_value=-48 * HOUR, max_value=48 * HOUR)),
)
def test_every_interval_is_at_least_a_minute_tight_never_later_and_never_past_the_expiry(
    status: str | None, quiet: int | None, attempts: int, expires_in: int | None
) -> None:
    session = due(status=status, quiet_ms=quiet, attempts=attempts)
    expires = None if expires_in is None else NOW_MS + expires_in
    normal = SCHEDULE.next_due_at_ms(session, NOW_MS, tight=False, expires_at_ms=expires)
    tight = SCHEDULE.next_due_at_ms(session, NOW_MS, tight=True, expires_at_ms=expires)
    assert NOW_MS + MINUTE <= tight <= normal
    if expires is not None:
        assert normal <= max(expires + MINUTE, NOW_MS + MINUTE)
    if session.updated_at_ms and tight > NOW_MS + 20 * MINUTE:
        assert not SCHEDULE.wants_sooner(replace(session, poll_due_at=tight), NOW_MS)


@given(
    status=st.sampled_from(["WAITING", "IN_PROGRESS"]),
    quiets=st.lists(st.integers(min_value=0, max_value=47 * HOUR), min_size=2, max_size=2),
)
def test_the_longer_a_session_has_been_quiet_the_longer_the_interval(status: str, quiets: list[int]) -> None:
    shorter, longer = sorted(quiets)
    assert interval(due(status=status, quiet_ms=shorter)) <= interval(due(status=status, quiet_ms=longer))


# -- the evidence of lost callbacks ------------------------------------------------------------------


def after_runs(state: PollerState, *runs: tuple[int, int], every_ms: int = MINUTE) -> PollerState:
    """`state` after runs a minute apart, each (unreported changes, reads)."""
    for changes, reads in runs:
        now = (state.updated_at_ms or NOW_MS - every_ms) + every_ms
        state = next_poller_state(state, unreported_changes=changes, reads=reads, now_ms=now, rule=RULE)
    return state


def test_unreported_changes_in_recent_reads_turn_the_tight_schedule_on() -> None:
    quiet = after_runs(PollerState(), *[(0, 500)] * 10)
    assert (quiet.catching_up, evidence_percent(quiet, RULE)) == (False, 0.0)
    # Callbacks stop arriving: 6% of each run's reads find a change no callback reported. One such run
    # among calm ones is not enough; a few minutes of them are.
    runs = 0
    state = quiet
    while not state.catching_up:
        state = after_runs(state, (30, 500))
        runs += 1
    assert runs == 3, runs
    assert RULE.on_percent <= evidence_percent(state, RULE) < 6


def test_one_unreported_change_among_few_reads_is_no_evidence() -> None:
    state = after_runs(PollerState(), (1, 3))  # a third of three reads
    assert evidence_percent(state, RULE) == pytest.approx(1.0)  # counted as 1 of 100 reads
    assert not state.catching_up
    assert after_runs(state, (2, 3)).catching_up, "three in a few minutes are"


def test_once_catching_up_it_goes_on_until_the_evidence_is_clearly_down() -> None:
    state = after_runs(PollerState(), *[(50, 500)] * 5)
    assert state.catching_up
    # Callbacks arrive again: the share decays, through the on threshold, until it is under the off one.
    shares = []
    while state.catching_up:
        state = after_runs(state, (0, 500))
        shares.append(evidence_percent(state, RULE))
        assert len(shares) < 60, "it relaxes within an hour"
    assert shares[-1] < RULE.off_percent <= shares[-2]
    assert any(RULE.off_percent <= share < RULE.on_percent for share in shares), "hysteresis"
    state = after_runs(state, (7, 500))  # 1.4% of a run: over off, under on: no flapping
    assert not state.catching_up


def test_the_evidence_ages_with_time_not_with_runs() -> None:
    state = after_runs(PollerState(), *[(50, 500)] * 5)
    # One run an hour later (no runs in between, say the schedule was off): twelve half-lives passed.
    later = next_poller_state(
        state, unreported_changes=0, reads=10, now_ms=state.updated_at_ms + HOUR, rule=RULE
    )
    assert evidence_percent(later, RULE) < 0.5
    assert not later.catching_up


def test_a_first_run_starts_from_no_evidence() -> None:
    first = next_poller_state(PollerState(), unreported_changes=0, reads=100, now_ms=NOW_MS, rule=RULE)
    assert first == PollerState(unreported_changes=0, reads=100, updated_at_ms=NOW_MS, catching_up=False)
