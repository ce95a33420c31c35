"""The reconciliation poller's runs against DynamoDB Local (some also on moto) and the Klarna simulator
over real HTTP. Time is a clock the test moves (shared by the repository, the poller and the simulator),
except where pacing is what is tested: there the simulator's recorded arrival times are the evidence."""

import itertools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from hpp_core.klarna import KlarnaClient
from hpp_core.models import DueSession, KlarnaSession, StatusUpdate, WriteOutcome
from hpp_core.poll_schedule import PollSchedule, ScheduleKind
from hpp_core.poller import PollOutcome, PollPolicy, PollRunReport, StopReason, poll_session, run_poll
from hpp_core.repository import (
    POLL_ATTEMPTS,
    POLL_DUE_AT,
    POLL_NOT_FOUND,
    POLL_SHARD,
    SessionRepository,
    StateRepository,
)
from hpp_core.timestamps import format_timestamp, to_epoch_millis, utc_now
from local.klarna_simulator import KlarnaSimulator, rate_limit_headers
from tests.support.clock import ManualClock
from tests.support.klarna import (
    MOVED_SESSIONS_PATH,
    klarna_client,
    klarna_reads,
    requested_session,
    simulated_klarna,
)
from tests.support.template import create_table

TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"
KP_URL = "https://api.playground.klarna.com/payments/v1/sessions/0b1d9815-165e-42e2-8867-35bc03789e00"
POLL_FIELDS = {POLL_SHARD, POLL_DUE_AT, POLL_ATTEMPTS, POLL_NOT_FOUND}
# Fast enough not to slow the tests down; tests about pacing set their own.
QUICK = PollPolicy(concurrency=4, rate_per_second=200, time_margin_seconds=2)


@dataclass
class World:
    repository: SessionRepository
    fake: KlarnaSimulator
    clock: ManualClock  # the repository's, the poller's and the simulator's; moved by the test
    klarna_timeout: float = 2.0
    password: str | None = None  # None: the simulator's own (right) password
    query_scanned: list[int] = field(default_factory=list)
    state: StateRepository | None = None  # the poller's own state; None: runs without it

    @property
    def klarna(self) -> KlarnaClient:
        return klarna_client(self.fake, password=self.password, timeout=self.klarna_timeout)

    def track(self, session_id: str | None = None, *, status: str = "WAITING", **fields: Any) -> str:
        """A session created through the tracker (WAITING in the table) and known to Klarna."""
        session_id = session_id or str(uuid.uuid4())
        session = self.fake.add_session(session_id, status=status, **fields)
        self.repository.create_session(
            session_id,
            expires_at=datetime.fromisoformat(session["expires_at"]),
            session_url=self.fake.session_url(session_id),
            callback_secret_hash=None,
        )
        return session_id

    def callback(self, session_id: str, status: str, updated_at: datetime, **fields: Any) -> WriteOutcome:
        """What the callback function records (its write path, minus the secret check)."""
        expires_at = self.row(session_id).get("expires_at")
        session = KlarnaSession.model_validate(
            {
                "session_id": session_id,
                "status": status,
                "updated_at": format_timestamp(updated_at),
                "expires_at": expires_at,
                **fields,
            }
        )
        return self.repository.record_status(StatusUpdate(session=session, source="callback")).outcome

    def run(self, policy: PollPolicy = QUICK, remaining_ms: int = 60_000) -> PollRunReport:
        return run_poll(
            self.repository,
            self.klarna,
            policy=policy,
            remaining_time_ms=lambda: remaining_ms,
            clock=self.clock,
            state=self.state,
        )

    def row(self, session_id: str) -> dict[str, Any]:
        item = self.repository.get_item(session_id)
        assert item is not None
        return item


def make_world(client: Any, table: str) -> Iterator[World]:
    clock = ManualClock(utc_now().replace(microsecond=0))
    with simulated_klarna(clock=clock) as fake:
        repository = SessionRepository(table, client, clock=clock)
        world = World(repository, fake, clock)
        client.meta.events.register(
            "after-call.dynamodb.Query",
            lambda parsed, **_: world.query_scanned.append(parsed["ScannedCount"]),
        )
        yield world


@pytest.fixture(params=["dynamodb_local", "moto"])
def world(request: pytest.FixtureRequest, moto_server: Any) -> Iterator[World]:
    """On DynamoDB Local, then on moto's server."""
    endpoint = (
        request.getfixturevalue("dynamodb_local").endpoint_url
        if request.param == "dynamodb_local"
        else moto_server.endpoint_url
    )
    client = boto3.client("dynamodb", endpoint_url=endpoint)
    table = f"sessions-{uuid.uuid4().hex[:12]}"
    create_table(client, "SessionsTable", table)
    yield from make_world(client, table)
    client.delete_table(TableName=table)


@pytest.fixture
def local_world(dynamodb_local: Any) -> Iterator[World]:
    """DynamoDB Local only: for the tests about pacing and time, which need no second engine."""
    client = dynamodb_local.client()
    table = f"sessions-{uuid.uuid4().hex[:12]}"
    create_table(client, "SessionsTable", table)
    yield from make_world(client, table)
    client.delete_table(TableName=table)


# -- correctness --------------------------------------------------------------------------------------


def test_sessions_whose_callbacks_were_all_lost_end_in_klarnas_final_state(world: World) -> None:
    completed = world.track()
    cancelled = world.track()
    ordered = world.track()
    waiting = world.track()
    world.clock.advance(minutes=5)
    # Klarna moves them on; every callback is lost.
    world.fake.act(completed, "COMPLETED", authorization_token=TOKEN)
    world.fake.act(cancelled, "CANCELLED")
    world.fake.act(ordered, "IN_PROGRESS")

    report = world.run()
    assert report.due == 4
    assert world.row(completed)["status"] == "COMPLETED"
    assert world.row(completed)["authorization_token"] == TOKEN
    assert world.row(cancelled)["status"] == "CANCELLED"
    assert world.row(ordered)["status"] == "IN_PROGRESS"
    for final in (completed, cancelled):
        row = world.row(final)
        assert not POLL_FIELDS & row.keys(), "final: out of the due index"
        assert (row["last_source"], row["updated_at"]) == (
            "poller",
            world.fake.read_body(final)["updated_at"],
        )

    world.clock.advance(minutes=1)
    world.fake.act(ordered, "COMPLETED", order_id="order-42", klarna_reference="ZQ6P2V8T")
    world.fake.clear_requests()
    world.clock.advance(minutes=2)
    world.run()
    row = world.row(ordered)
    assert (row["status"], row["order_id"], row["klarna_reference"]) == ("COMPLETED", "order-42", "ZQ6P2V8T")
    # Final sessions are not polled again.
    assert sorted(klarna_reads(world.fake)) == sorted([ordered, waiting])
    assert world.row(waiting)["status"] == "WAITING"


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # The previous policy: doubling from a minute to 15 minutes, whatever the session's age.
        (PollSchedule(kind=ScheduleKind.BACKOFF), [60, 120, 240, 480, 900, 900, 900, 900]),
        # The current one: the quiet time since Klarna's updated_at (its creation) doubles, up to an hour.
        (PollSchedule(), [60, 120, 240, 480, 960, 1920, 3600, 3600]),
    ],
    ids=["backoff", "risk"],
)
def test_the_interval_grows_while_nothing_changes_and_a_callback_resets_it(
    world: World, schedule: PollSchedule, expected: list[int]
) -> None:
    session_id = world.track()
    intervals = []
    for _ in range(8):
        world.clock.now = datetime.fromtimestamp(world.row(session_id)[POLL_DUE_AT] / 1000, UTC)
        polled_at = to_epoch_millis(world.clock.now)
        world.run(replace(QUICK, schedule=schedule))
        intervals.append((world.row(session_id)[POLL_DUE_AT] - polled_at) // 1000)
    # The first poll records Klarna's own WAITING (a change: created rows carry updated_at_ms 0).
    assert intervals == expected
    assert world.row(session_id)[POLL_ATTEMPTS] == 7

    world.clock.advance(minutes=3)
    assert world.callback(session_id, "IN_PROGRESS", world.clock.now) is WriteOutcome.APPLIED
    row = world.row(session_id)
    assert (row[POLL_ATTEMPTS], row[POLL_DUE_AT]) == (0, to_epoch_millis(world.clock.now) + 60_000)


def test_an_older_poll_answer_never_overwrites_a_newer_callback(world: World) -> None:
    session_id = world.track(status="IN_PROGRESS")
    old_answer = world.fake.read_body(session_id)
    world.clock.advance(minutes=5)
    # Klarna's answer to the poll is slow and reflects the state before the callback below.
    world.fake.fail_next("GET", world.fake.session_url(session_id), status=200, body=old_answer, delay=0.6)
    reports: list[PollRunReport] = []
    poller = threading.Thread(target=lambda: reports.append(world.run()))
    poller.start()
    world.fake.wait_for_requests(1, "GET")
    # While the poll waits for Klarna, the consumer fails a payment and the callback is recorded.
    failed_at = world.clock.now - timedelta(seconds=10)
    assert world.callback(session_id, "FAILED", failed_at) is WriteOutcome.APPLIED
    callback_row = world.row(session_id)
    poller.join(timeout=30)

    (report,) = reports
    assert report.outcomes == {PollOutcome.SUPERSEDED: 1}
    row = world.row(session_id)
    assert (row["status"], row["last_source"], row["updated_at"]) == (
        "FAILED",
        "callback",
        format_timestamp(failed_at),
    )
    # The callback's schedule stands: the poll neither overwrote the status nor pushed the next poll.
    assert (row[POLL_DUE_AT], row[POLL_ATTEMPTS]) == (callback_row[POLL_DUE_AT], 0)


def test_a_completed_callback_during_a_poll_stays_completed(world: World) -> None:
    session_id = world.track(status="IN_PROGRESS")
    old_answer = world.fake.read_body(session_id)
    world.clock.advance(minutes=5)
    world.fake.fail_next("GET", world.fake.session_url(session_id), status=200, body=old_answer, delay=0.6)
    poller = threading.Thread(target=world.run)
    poller.start()
    world.fake.wait_for_requests(1, "GET")
    assert world.callback(session_id, "COMPLETED", world.clock.now, authorization_token=TOKEN) is (
        WriteOutcome.APPLIED
    )
    poller.join(timeout=30)
    row = world.row(session_id)
    assert (row["status"], row["authorization_token"]) == ("COMPLETED", TOKEN)
    assert not POLL_FIELDS & row.keys(), "the poll did not put the final session back in the index"


def test_an_older_callback_after_a_polled_completion_changes_nothing(world: World) -> None:
    session_id = world.track()
    world.clock.advance(minutes=5)
    world.fake.act(session_id, "COMPLETED", authorization_token=TOKEN)
    world.run()
    late = world.clock.now - timedelta(minutes=2)
    assert world.callback(session_id, "IN_PROGRESS", late) is WriteOutcome.ALREADY_FINAL
    assert world.row(session_id)["status"] == "COMPLETED"


# -- expiry and not found ----------------------------------------------------------------------------


def test_404_after_expires_at_records_expired_stamped_at_expires_at(world: World) -> None:
    session_id = world.track(status="IN_PROGRESS")
    expires_at = world.row(session_id)["expires_at"]
    world.clock.advance(hours=50)  # past expires_at: Klarna answers 404
    report = world.run()
    assert report.outcomes == {PollOutcome.EXPIRED: 1}
    row = world.row(session_id)
    assert (row["status"], row["updated_at"], row["last_source"]) == ("EXPIRED", expires_at, "poller")
    assert row["updated_at"] != format_timestamp(world.clock.now), "never the tracker's clock"
    assert not POLL_FIELDS & row.keys()
    # EXPIRED is final: a late callback cannot move it.
    assert world.callback(session_id, "IN_PROGRESS", world.clock.now) is WriteOutcome.ALREADY_FINAL
    world.fake.clear_requests()
    world.clock.advance(days=1)
    world.run()
    assert klarna_reads(world.fake) == [], "an expired session is not polled again"


def test_expired_is_never_stamped_before_klarnas_last_update(world: World) -> None:
    """Clock hazard: Klarna's clock ran ahead of the expires_at it gave; EXPIRED must still apply."""
    session_id = world.track(status="IN_PROGRESS")
    expires_at = datetime.fromisoformat(world.row(session_id)["expires_at"])
    last_update = expires_at + timedelta(seconds=2, milliseconds=345)
    world.clock.now = expires_at - timedelta(minutes=1)
    assert world.callback(session_id, "BACK", last_update) is WriteOutcome.APPLIED
    world.clock.now = expires_at + timedelta(minutes=5)
    report = world.run()
    assert report.outcomes == {PollOutcome.EXPIRED: 1}
    row = world.row(session_id)
    assert (row["status"], row["updated_at"]) == ("EXPIRED", format_timestamp(last_update))


def test_expiry_uses_the_stored_update_when_the_index_copy_is_behind(world: World) -> None:
    session_id = world.track(status="IN_PROGRESS")
    expires_at = datetime.fromisoformat(world.row(session_id)["expires_at"])
    world.clock.now = expires_at + timedelta(minutes=5)
    (due,) = due_sessions(world)
    # Recorded after the poller read the index: the due copy does not know this update.
    late_update = expires_at + timedelta(seconds=7)
    assert world.callback(session_id, "BACK", late_update) is WriteOutcome.APPLIED
    result = poll_session(due, store=world.repository, klarna=world.klarna, policy=QUICK, clock=world.clock)
    assert result.outcome is PollOutcome.EXPIRED
    assert world.row(session_id)["updated_at"] == format_timestamp(late_update)


def test_still_not_final_an_hour_after_expiry_is_expired_even_if_klarna_answers(world: World) -> None:
    session_id = world.track(status="IN_PROGRESS")
    expires_at = datetime.fromisoformat(world.row(session_id)["expires_at"])
    # Klarna keeps answering past expires_at (its clock, or a slow clean-up): scripted answers.
    answer = world.fake.read_body(session_id)
    world.fake.fail_always("GET", world.fake.session_url(session_id), status=200, body=answer)
    world.clock.now = expires_at + timedelta(minutes=30)
    assert world.run().outcomes == {PollOutcome.CHANGED: 1}, "within the hour: Klarna's answer is recorded"
    assert world.row(session_id)["status"] == "IN_PROGRESS"
    world.clock.now = expires_at + timedelta(minutes=61)
    assert world.run().outcomes == {PollOutcome.EXPIRED: 1}
    row = world.row(session_id)
    assert (row["status"], row["updated_at"]) == ("EXPIRED", format_timestamp(expires_at))


def test_404_before_expiry_is_retried_then_parked_until_expiry_then_expired(world: World) -> None:
    session_id = world.track()
    expires_at = datetime.fromisoformat(world.row(session_id)["expires_at"])
    world.fake.forget(session_id)  # Klarna does not know it (yet, or any more)
    outcomes = []
    for _ in range(3):
        world.clock.now = datetime.fromtimestamp(world.row(session_id)[POLL_DUE_AT] / 1000, UTC)
        outcomes.append(next(iter(world.run().outcomes)))
    assert outcomes == [PollOutcome.NOT_FOUND, PollOutcome.NOT_FOUND, PollOutcome.PARKED]
    row = world.row(session_id)
    assert (row["status"], row[POLL_NOT_FOUND]) == ("WAITING", 3)
    assert row[POLL_DUE_AT] == to_epoch_millis(expires_at + timedelta(hours=1))

    world.fake.clear_requests()
    world.clock.now = expires_at + timedelta(minutes=59)
    world.run()
    assert klarna_reads(world.fake) == [], "parked: not asked again before it has expired"
    world.clock.now = expires_at + timedelta(hours=1)
    assert world.run().outcomes == {PollOutcome.EXPIRED: 1}
    row = world.row(session_id)
    assert (row["status"], row["updated_at"]) == ("EXPIRED", format_timestamp(expires_at))


def test_a_404_that_klarna_takes_back_is_forgotten(world: World) -> None:
    session_id = world.track()
    world.fake.fail_next("GET", world.fake.session_url(session_id), status=404)
    world.clock.advance(minutes=5)
    assert world.run().outcomes == {PollOutcome.NOT_FOUND: 1}
    assert world.row(session_id)[POLL_NOT_FOUND] == 1
    world.clock.advance(minutes=5)
    assert world.run().outcomes == {PollOutcome.CHANGED: 1}
    assert POLL_NOT_FOUND not in world.row(session_id)


def test_not_found_without_expires_at_stops_polling_and_keeps_the_status(world: World) -> None:
    session_id = str(uuid.uuid4())
    world.repository.create_session(session_id, expires_at=None, session_url=None, callback_secret_hash=None)
    outcomes = []
    for _ in range(3):
        world.clock.now = datetime.fromtimestamp(world.row(session_id)[POLL_DUE_AT] / 1000, UTC)
        outcomes.append(next(iter(world.run().outcomes)))
    assert outcomes == [PollOutcome.NOT_FOUND, PollOutcome.NOT_FOUND, PollOutcome.GIVEN_UP]
    row = world.row(session_id)
    assert row["status"] == "WAITING"
    assert not POLL_FIELDS & row.keys()


# -- failures ----------------------------------------------------------------------------------------


def test_a_klarna_timeout_or_5xx_on_one_session_does_not_stop_the_rest(local_world: World) -> None:
    world = local_world
    world.klarna_timeout = 0.3
    sessions = [world.track() for _ in range(8)]
    slow, broken = sessions[2], sessions[5]
    world.fake.fail_next("GET", world.fake.session_url(slow), status=None, delay=2.0)
    world.fake.fail_next("GET", world.fake.session_url(broken), status=503)
    world.clock.advance(minutes=5)
    report = world.run(replace(QUICK, concurrency=2))
    assert report.errors == {"KlarnaTimeout": 1, "KlarnaUnavailable": 1}
    assert report.outcomes[PollOutcome.CHANGED] == 6
    assert report.outcomes[PollOutcome.ERROR] == 2
    for failed in (slow, broken):
        row = world.row(failed)
        # Backed off like a poll that found nothing, so one broken session is not retried every run.
        assert (row[POLL_ATTEMPTS], row[POLL_DUE_AT]) == (1, to_epoch_millis(world.clock.now) + 120_000)
    assert {p.session_id: p.error_kind for p in report.problems} == {
        slow: "KlarnaTimeout",
        broken: "KlarnaUnavailable",
    }


def test_401_stops_the_run_at_once_and_leaves_every_session_due(local_world: World) -> None:
    world = local_world
    world.password = "not-the-password"
    sessions = [world.track() for _ in range(20)]
    world.clock.advance(minutes=5)
    before = {s: world.row(s) for s in sessions}
    report = world.run(PollPolicy(concurrency=5, rate_per_second=20, time_margin_seconds=2))
    assert report.stopped is StopReason.KLARNA_AUTH_FAILED
    assert 1 <= len(world.fake.requests) <= 5, "at most the reads already in flight"
    assert all(r.response_status == 401 for r in world.fake.requests)
    assert {s: world.row(s) for s in sessions} == before, "nothing rescheduled or recorded"
    assert report.outcomes[PollOutcome.AUTH_FAILED] >= 1
    assert report.read_from_klarna == 0


def test_403_stops_the_run_too(local_world: World) -> None:
    world = local_world
    for _ in range(6):
        world.track()
    world.fake.fail_always("GET", None, status=403)
    world.clock.advance(minutes=5)
    report = world.run(PollPolicy(concurrency=2, rate_per_second=20, time_margin_seconds=2))
    assert report.stopped is StopReason.KLARNA_AUTH_FAILED
    assert len(world.fake.requests) <= 2


def test_429_pauses_the_whole_run_for_retry_after_and_halves_its_rate(local_world: World) -> None:
    world = local_world
    sessions = [world.track() for _ in range(12)]
    world.clock.advance(minutes=5)
    world.fake.fail_next("GET", None, status=429, headers=rate_limit_headers(limit=20, reset=1))
    policy = PollPolicy(concurrency=4, rate_per_second=20, time_margin_seconds=2)
    report = world.run(policy)

    requests = world.fake.requests
    throttled = requests[0]
    assert throttled.response_status == 429
    assert report.throttles == 1
    # Nothing is sent while the pause lasts (a read already on the wire may land just after the 429).
    quiet = [r for r in requests[1:] if throttled.monotonic + 0.1 < r.monotonic < throttled.monotonic + 0.95]
    assert quiet == []
    after = [r.monotonic for r in requests[1:] if r.monotonic >= throttled.monotonic + 0.95]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    # Half of 20/s (with the limiter's 5% headroom): ~105 ms apart instead of ~53 ms.
    assert sum(gaps) / len(gaps) > 0.09
    # The throttled session was left due as it was (for the next run); the rest were polled.
    assert report.outcomes == {PollOutcome.CHANGED: len(sessions) - 1, PollOutcome.THROTTLED: 1}
    throttled_row = world.row(requested_session(throttled))
    assert (throttled_row["updated_at_ms"], throttled_row[POLL_ATTEMPTS]) == (0, 0)


def test_429_from_klarnas_own_limit_is_rare_once_the_run_slows_down(local_world: World) -> None:
    world = local_world
    world.fake.set_rate_limits(other=5)
    sessions = [world.track() for _ in range(20)]
    world.clock.advance(minutes=5)
    report = world.run(PollPolicy(concurrency=4, rate_per_second=20, time_margin_seconds=2))
    refused = [r for r in world.fake.requests if r.response_status == 429]
    # At 20/s against a 5/s limit, without slowing down about 3 of every 4 reads would be refused.
    assert 1 <= len(refused) <= 4
    assert report.throttles == len(refused)
    assert report.outcomes[PollOutcome.CHANGED] == len(sessions) - len(refused)
    # The next run picks up what was refused.
    world.clock.advance(seconds=1)
    world.fake.set_rate_limits()  # back to Klarna's own
    assert world.run().outcomes[PollOutcome.CHANGED] == len(refused)


# -- pacing, time, cost ------------------------------------------------------------------------------


def test_the_rate_cap_holds_in_every_one_second_window(local_world: World) -> None:
    world = local_world
    for _ in range(60):
        world.track()
    world.clock.advance(minutes=5)
    report = world.run(PollPolicy(concurrency=10, rate_per_second=20, time_margin_seconds=2))
    assert report.outcomes[PollOutcome.CHANGED] == 60
    arrivals = sorted(r.monotonic for r in world.fake.requests)
    assert len(arrivals) == 60
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 20


def test_the_time_budget_is_respected_and_the_next_run_finishes(local_world: World) -> None:
    world = local_world
    sessions = [world.track() for _ in range(40)]
    world.clock.advance(minutes=5)
    policy = PollPolicy(concurrency=4, rate_per_second=10, time_margin_seconds=2)
    deadline = threading.Event()
    started = datetime.now(UTC)

    def remaining_ms() -> int:  # a 3.5-second invocation, counting down for real
        left = 3500 - int((datetime.now(UTC) - started).total_seconds() * 1000)
        if left <= 0:
            deadline.set()
        return max(0, left)

    first = run_poll(
        world.repository, world.klarna, policy=policy, remaining_time_ms=remaining_ms, clock=world.clock
    )
    assert not deadline.is_set(), "the run returned before its invocation's time ran out"
    assert first.stopped is StopReason.TIME_BUDGET
    polled = set(klarna_reads(world.fake))
    assert 0 < len(polled) < 40
    untouched = [s for s in sessions if s not in polled]
    assert all(world.row(s)["status"] == "WAITING" and world.row(s)[POLL_ATTEMPTS] == 0 for s in untouched)

    second = world.run()
    assert second.stopped is None
    # Each session read exactly once over both runs.
    assert sorted(klarna_reads(world.fake)) == sorted(sessions)
    assert all(world.row(s)["updated_at_ms"] > 0 for s in sessions)


def test_a_run_reads_only_the_due_sessions(world: World) -> None:
    """Many final and not-yet-due sessions: DynamoDB read exactly the due ones, Klarna heard about those."""
    for n in range(30):
        session_id = world.track()
        world.callback(session_id, "COMPLETED" if n % 2 else "CANCELLED", world.clock.now)
    due = [world.track() for _ in range(17)]
    world.clock.advance(minutes=2)
    for _ in range(40):
        world.track()  # due a minute from now
    world.query_scanned.clear()
    report = world.run()
    assert sum(world.query_scanned) == report.index_items_read == report.due == 17
    assert sorted(klarna_reads(world.fake)) == sorted(due)


def due_sessions(world: World) -> list[DueSession]:
    now_ms = to_epoch_millis(world.clock.now)
    found = []
    for shard in world.repository.poll_shard_ids:
        found += world.repository.due_sessions_page(shard, due_by_ms=now_ms, limit=100).sessions
    return found


# -- the URLs Klarna returned -----------------------------------------------------------------------


def created_through_the_tracker(world: World, session_url: str | None = None) -> str:
    """A session created at Klarna as POST /sessions does it, stored with the session_url it returned
    (or with `session_url` instead, as if Klarna had returned that)."""
    created = world.klarna.create_session({"payment_session_url": KP_URL}).session
    world.repository.create_session(
        created.session_id,
        expires_at=created.expires_at,
        session_url=session_url or created.session_url,
        callback_secret_hash=None,
    )
    return created.session_id


def test_the_poller_reads_each_session_at_the_url_its_create_returned(world: World) -> None:
    first, second = created_through_the_tracker(world), created_through_the_tracker(world)
    assert MOVED_SESSIONS_PATH in world.fake.session_url(first)
    world.clock.advance(minutes=5)
    world.fake.act(first, "COMPLETED", authorization_token=TOKEN, callback=False)
    world.fake.clear_requests()
    report = world.run()
    # Both changed: the tracker had no updated_at of Klarna's for either before.
    assert report.outcomes[PollOutcome.CHANGED] == 2
    assert sorted(request.path for request in world.fake.requests) == sorted(
        f"{MOVED_SESSIONS_PATH}/{session_id}" for session_id in (first, second)
    )
    assert world.row(first)["status"] == "COMPLETED"


def test_a_stored_url_on_another_host_is_refused_nothing_is_sent_and_the_session_backs_off(
    world: World,
) -> None:
    with simulated_klarna(clock=world.clock) as elsewhere:
        session_id = created_through_the_tracker(world, f"{elsewhere.url}{MOVED_SESSIONS_PATH}/x")
        world.clock.advance(minutes=5)
        world.fake.clear_requests()
        report = world.run()
        assert (report.outcomes[PollOutcome.ERROR], report.errors["KlarnaUrlRefused"]) == (1, 1)
        (problem,) = report.problems
        assert problem.error is not None and "KLARNA_API_URL" in str(problem.error)
        assert elsewhere.requests == [] and world.fake.requests == [], "nothing sent anywhere"
        row = world.row(session_id)
        assert (row["status"], row[POLL_ATTEMPTS]) == ("WAITING", 1), "backed off, not read every run"


# -- lost callbacks: tighten, then relax --------------------------------------------------------------


@pytest.fixture
def lossy_world(local_world: World) -> Iterator[World]:
    """DynamoDB Local, with the poller's state in a state table made from template.yaml."""
    client = local_world.repository.client
    table = f"state-{uuid.uuid4().hex[:12]}"
    create_table(client, "StateTable", table)
    local_world.state = StateRepository(table, client, clock=local_world.clock)
    yield local_world
    client.delete_table(TableName=table)


def quiet_for(world: World, quiet: timedelta, due_in: timedelta) -> str:
    """A session Klarna last reported on `quiet` ago (WAITING, recorded), due `due_in` from now."""
    session_id = str(uuid.uuid4())
    session = world.fake.add_session(session_id, updated_at=world.clock.now - quiet)
    world.repository.record_status(
        StatusUpdate(session=KlarnaSession.model_validate(session), source="klarna_read")
    )
    row = world.row(session_id)
    entry = DueSession(
        session_id=session_id,
        poll_shard=row[POLL_SHARD],
        poll_due_at=row[POLL_DUE_AT],
        poll_attempts=row[POLL_ATTEMPTS],
        poll_not_found=0,
        status="WAITING",
        updated_at_ms=row["updated_at_ms"],
        expires_at=None,
    )
    assert world.repository.reschedule_poll(entry, next_due_at_ms=to_epoch_millis(world.clock.now + due_in))
    return session_id


def due_in(world: World, session_id: str) -> timedelta:
    return timedelta(milliseconds=world.row(session_id)[POLL_DUE_AT] - to_epoch_millis(world.clock.now))


def callbacks_stop_for_a_burst(world: World, shoppers: list[str]) -> PollRunReport:
    """12 consumers open their page while Klarna's callbacks do not reach the tracker; then a run."""
    world.clock.advance(minutes=1)
    for shopper in shoppers[:12]:
        world.fake.act(shopper, "IN_PROGRESS", callback=False)
    world.clock.advance(minutes=1)
    return world.run()


def runs_until_relaxed(world: World, report: PollRunReport) -> int:
    """Runs 5 minutes apart, while nothing unreported is found, until the poller stops catching up."""
    runs = 0
    while report.state is not None and report.state.catching_up:
        world.clock.advance(minutes=5)
        report = world.run()
        assert report.unreported_changes == 0
        runs += 1
        assert runs <= 8, "relaxed within 40 minutes"
    return runs


def test_a_burst_of_lost_callbacks_makes_the_poller_tighten_then_relax(lossy_world: World) -> None:
    world = lossy_world
    assert world.state is not None
    shoppers = [world.track() for _ in range(30)]
    # Young sessions nobody has opened for two hours: the normal schedule reads them hourly.
    witnesses = [quiet_for(world, timedelta(hours=2), timedelta(minutes=50)) for _ in range(3)]
    world.clock.advance(minutes=1)
    calm = world.run()
    assert (calm.due, calm.unreported_changes, calm.catching_up) == (30, 0, False)

    burst = callbacks_stop_for_a_burst(world, shoppers)
    assert (burst.unreported_changes, burst.catching_up) == (12, False), "it started before the evidence"
    assert burst.state is not None and burst.state.catching_up
    assert world.state.poller_state() == burst.state, "kept in the state table for the next run"

    # Tight: the next run also reads the young sessions not due for another 47 minutes, and every
    # young session it reads is next due within 20 minutes.
    world.clock.advance(minutes=1)
    tight = world.run()
    assert (tight.catching_up, tight.catch_up_reads) == (True, len(witnesses))
    assert set(klarna_reads(world.fake)[-tight.read_from_klarna :]) >= set(witnesses)
    assert all(due_in(world, w) == timedelta(minutes=20) for w in witnesses)

    # Callbacks arrive again: nothing unreported is found, the evidence decays and the poller relaxes,
    # not at the first calm run (the off threshold is lower than the on one).
    assert runs_until_relaxed(world, tight) >= 2
    world.clock.now = datetime.fromtimestamp(world.row(witnesses[0])[POLL_DUE_AT] / 1000, UTC)
    relaxed = world.run()
    assert (relaxed.catching_up, relaxed.catch_up_reads) == (False, 0)
    assert due_in(world, witnesses[0]) == timedelta(hours=1), "quiet for 2 h 20 min: hourly again"
