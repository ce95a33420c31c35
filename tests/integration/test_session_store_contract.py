"""The storage ports' contract: the same tests against the in-memory store the unit tests share and the
repository on DynamoDB Local and on moto. If the fake's rules drift from the repository's, this fails.

Everything here goes through the ports and their models (hpp_core.ports); what the rows look like in
the table is tested in test_repository.py and test_poll_schedule.py.
"""

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.errors import Conflict
from hpp_core.lifecycle import poll_shard
from hpp_core.models import (
    ConsumerLinks,
    DueSession,
    StatusUpdate,
    TrackedSession,
    UpdateSource,
    WriteOutcome,
)
from hpp_core.poller import due_sessions
from hpp_core.repository import SessionRepository
from hpp_core.timestamps import to_epoch_millis
from tests.support.clock import ManualClock
from tests.support.dynamodb_local import ENGINES, engine_client
from tests.support.klarna import KLARNA_SESSION_LIFETIME
from tests.support.memory_store import MemorySessionStore
from tests.support.template import create_table

Store = MemorySessionStore | SessionRepository

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"
RIGHT_HASH = hash_callback_secret("the-right-secret")
WRONG_HASH = hash_callback_secret("a guess")
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
EXPIRES = START + KLARNA_SESSION_LIFETIME


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(params=["memory", *ENGINES])
def new_store(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[Callable[..., Store]]:
    """Makes a store (with `poll_shards` shards) on the backend under test; the clock is the test's."""
    if request.param == "memory":
        yield lambda poll_shards=8: MemorySessionStore(poll_shards=poll_shards, clock=clock)
        return
    with engine_client(request.param, request) as client:
        table = f"contract-{uuid.uuid4().hex[:12]}"
        create_table(client, "SessionsTable", table)
        # No TTL: DynamoDB Local deletes rows whose TTL has passed.
        yield lambda poll_shards=8: SessionRepository(
            table, client, poll_shards=poll_shards, retention_days=0, clock=clock
        )
        client.delete_table(TableName=table)


@pytest.fixture
def store(new_store: Callable[..., Store]) -> Store:
    return new_store()


def update(
    status: str,
    updated_at: str | datetime,
    *,
    source: UpdateSource = "klarna_read",
    session_id: str = SID,
    event_id: str | None = None,
    **fields: Any,
) -> StatusUpdate:
    session = {"session_id": session_id, "status": status, "updated_at": updated_at, **fields}
    return StatusUpdate.model_validate(
        {"session": {"expires_at": EXPIRES, **session}, "source": source, "event_id": event_id}
    )


def outcome(store: Store, status: str, updated_at: str | datetime, **kwargs: Any) -> WriteOutcome:
    return store.record_status(update(status, updated_at, **kwargs)).outcome


def callback(store: Store, status: str, updated_at: str, secret_hash: str, **kwargs: Any) -> WriteOutcome:
    written = update(status, updated_at, source="callback", event_id="e1", **kwargs)
    return store.record_status(written, callback_secret_hash=secret_hash).outcome


def stored(store: Store, session_id: str = SID) -> TrackedSession:
    session = store.get_session(session_id)
    assert session is not None
    return session


def track(store: Store, session_id: str = SID, secret_hash: str | None = RIGHT_HASH) -> TrackedSession:
    return store.create_session(
        session_id,
        expires_at=EXPIRES,
        session_url=f"https://klarna/{session_id}",
        callback_secret_hash=secret_hash,
    )


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def all_due(store: Store, moment: datetime) -> list[DueSession]:
    """Every session due at `moment`, as the poller reads them (all shards, page by page)."""
    return list(due_sessions(store, due_by_ms=to_epoch_millis(moment), page_size=3))


def due_ids(store: Store, moment: datetime) -> list[str]:
    return [due.session_id for due in all_due(store, moment)]


# -- the one write path -----------------------------------------------------------------------------


def test_a_first_observation_creates_the_session(store: Store) -> None:
    result = store.record_status(update("IN_PROGRESS", "2019-05-13T14:52:10.120Z", event_id="e1"))
    assert result.outcome is WriteOutcome.APPLIED
    session = stored(store)
    assert result.session == session
    assert (session.status, session.updated_at_ms, session.last_source, session.last_event_id) == (
        "IN_PROGRESS",
        to_epoch_millis(datetime(2019, 5, 13, 14, 52, 10, 120000, tzinfo=UTC)),
        "klarna_read",
        "e1",
    )
    assert (session.expires_at, session.callback_secret_hash) == (EXPIRES, None)


def test_newer_applies_older_is_stale_the_same_is_a_duplicate(store: Store) -> None:
    assert outcome(store, "IN_PROGRESS", "2019-05-13T14:52:00.000Z") is WriteOutcome.APPLIED
    assert outcome(store, "FAILED", "2019-05-13T14:53:00.000Z") is WriteOutcome.APPLIED
    assert outcome(store, "IN_PROGRESS", "2019-05-13T14:52:00.000Z") is WriteOutcome.STALE
    assert outcome(store, "FAILED", "2019-05-13T14:53:00.000Z") is WriteOutcome.DUPLICATE
    assert outcome(store, "FAILED", "2019-05-13T16:53:00+02:00") is WriteOutcome.DUPLICATE
    assert stored(store).status == "FAILED"


def test_a_refused_write_answers_with_the_session_as_it_stands(store: Store) -> None:
    store.record_status(update("FAILED", "2019-05-13T14:53:00.000Z"))
    result = store.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00.000Z"))
    assert (result.outcome, result.stored_status, result.session) == (
        WriteOutcome.STALE,
        "FAILED",
        stored(store),
    )


def test_order_is_decided_on_milliseconds_not_on_text(store: Store) -> None:
    # "…:04Z" sorts after "…:04.001Z" as text; the later instant must still win.
    assert outcome(store, "IN_PROGRESS", "2019-05-13T14:54:04Z") is WriteOutcome.APPLIED
    assert outcome(store, "FAILED", "2019-05-13T14:54:04.001Z") is WriteOutcome.APPLIED
    assert outcome(store, "IN_PROGRESS", "2019-05-13T16:54:04+02:00") is WriteOutcome.STALE
    assert stored(store).status == "FAILED"


def test_final_is_final(store: Store) -> None:
    at_completion = "2019-05-13T14:54:04.675Z"
    assert outcome(store, "COMPLETED", at_completion, authorization_token=TOKEN) is WriteOutcome.APPLIED
    # A regression with a *later* timestamp is refused all the same.
    assert outcome(store, "IN_PROGRESS", "2019-05-13T15:00:00.000Z") is WriteOutcome.ALREADY_FINAL
    assert outcome(store, "CANCELLED", "2019-05-13T15:00:00.000Z") is WriteOutcome.ALREADY_FINAL
    assert outcome(store, "COMPLETED", at_completion, authorization_token=TOKEN) is WriteOutcome.DUPLICATE
    session = stored(store)
    assert session.status == "COMPLETED"
    assert session.authorization_token is not None
    assert session.authorization_token.get_secret_value() == TOKEN


@pytest.mark.parametrize("final", ["COMPLETED", "CANCELLED", "DISABLED", "EXPIRED"])
def test_at_the_same_millisecond_final_beats_not_final_in_either_order(store: Store, final: str) -> None:
    moment = "2019-05-13T14:54:04.675Z"
    assert outcome(store, "IN_PROGRESS", moment, session_id="a-first") is WriteOutcome.APPLIED
    assert outcome(store, final, moment, session_id="a-first") is WriteOutcome.APPLIED
    assert outcome(store, final, moment, session_id="b-first") is WriteOutcome.APPLIED
    assert outcome(store, "IN_PROGRESS", moment, session_id="b-first") is WriteOutcome.ALREADY_FINAL
    assert stored(store, "a-first").status == stored(store, "b-first").status == final


def test_at_the_same_millisecond_two_not_final_keep_the_stored(store: Store) -> None:
    moment = "2019-05-13T14:54:04.675Z"
    assert outcome(store, "FAILED", moment) is WriteOutcome.APPLIED
    assert outcome(store, "BACK", moment) is WriteOutcome.STALE
    assert stored(store).status == "FAILED"


def test_a_status_klarna_adds_later_is_stored_and_not_final(store: Store) -> None:
    assert outcome(store, "PAUSED_BY_CONSUMER", "2019-05-13T14:53:00Z") is WriteOutcome.APPLIED
    assert stored(store).status == "PAUSED_BY_CONSUMER"
    assert due_ids(store, at(10)) == [SID], "not final, so the poller keeps reading it"
    assert outcome(store, "COMPLETED", "2019-05-13T14:54:00Z") is WriteOutcome.APPLIED


def test_completion_details_are_stored(store: Store) -> None:
    store.record_status(
        update("COMPLETED", "2019-05-13T14:54:04.675Z", order_id="order-1", klarna_reference="ZQ6P2V8T")
    )
    session = stored(store)
    assert (session.order_id, session.klarna_reference, session.authorization_token) == (
        "order-1",
        "ZQ6P2V8T",
        None,
    )


# -- the sessions API's create, and writes that carry a callback secret -----------------------------


def test_a_created_session_is_waiting_and_any_klarna_update_beats_it(store: Store) -> None:
    created = track(store)
    assert created == stored(store)
    assert (created.status, created.updated_at_ms, created.last_source) == ("WAITING", 0, "sessions_api")
    assert (created.session_url, created.expires_at, created.updated_at) == (
        f"https://klarna/{SID}",
        EXPIRES,
        START,
    )
    assert created.accepts_callback_secret(RIGHT_HASH)
    # Klarna's clock may be behind ours: an update stamped before our creation time still applies.
    assert callback(store, "IN_PROGRESS", "2001-01-01T00:00:00Z", RIGHT_HASH) is WriteOutcome.APPLIED


def test_creating_twice_is_a_conflict(store: Store) -> None:
    track(store)
    with pytest.raises(Conflict):
        track(store, secret_hash=None)


def test_a_first_callback_that_beat_the_create_gets_the_secret_attached(store: Store) -> None:
    # The callback for an unknown session was confirmed by Klarna and created the session first.
    store.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00Z"))
    with pytest.raises(Conflict):
        track(store)
    session = stored(store)
    assert (session.status, session.session_url) == ("IN_PROGRESS", f"https://klarna/{SID}")
    assert session.accepts_callback_secret(RIGHT_HASH)
    # So the next callback is checked against it (one write, no Klarna read) ...
    assert callback(store, "FAILED", "2019-05-13T14:53:00Z", RIGHT_HASH) is WriteOutcome.APPLIED
    # ... and a second create never replaces a secret on file.
    with pytest.raises(Conflict):
        track(store, secret_hash=WRONG_HASH)
    assert stored(store).accepts_callback_secret(RIGHT_HASH)
    assert not stored(store).accepts_callback_secret(WRONG_HASH)


LINKS = ConsumerLinks.model_validate(
    {
        "redirect_url": f"https://pay.klarna/{SID}",
        "qr_code_url": f"https://pay.klarna/{SID}/qr",
        "distribution_url": f"https://klarna/{SID}/distribution",
        "manual_identification_check_url": f"https://klarna/{SID}/mic",
        "distribution_module": {
            "token": "bearer-ish",
            "standalone_url": "https://pay.klarna/s",
            "generation_url": "g",
        },
    }
)


def test_a_created_session_keeps_its_consumer_links_but_never_the_distribution_token(store: Store) -> None:
    created = store.create_session(
        SID,
        expires_at=EXPIRES,
        session_url=f"https://klarna/{SID}",
        callback_secret_hash=RIGHT_HASH,
        links=LINKS,
    )
    assert created == stored(store)
    assert created.links() == LINKS
    assert created.distribution_module is not None
    assert created.distribution_module.model_dump() == {
        "standalone_url": "https://pay.klarna/s",
        "generation_url": "g",
    }
    assert "bearer-ish" not in stored(store).model_dump_json()
    # Later writes keep them.
    assert outcome(store, "IN_PROGRESS", "2019-05-13T14:52:00Z") is WriteOutcome.APPLIED
    assert stored(store).links() == LINKS


def test_a_first_callback_that_beat_the_create_gets_the_links_too(store: Store) -> None:
    store.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00Z"))
    with pytest.raises(Conflict):
        store.create_session(
            SID,
            expires_at=EXPIRES,
            session_url=f"https://klarna/{SID}",
            callback_secret_hash=RIGHT_HASH,
            links=LINKS,
        )
    session = stored(store)
    assert (session.status, session.session_url, session.links()) == (
        "IN_PROGRESS",
        f"https://klarna/{SID}",
        LINKS,
    )


def test_the_right_secret_applies_and_stays_on_file(store: Store) -> None:
    track(store)
    assert callback(store, "IN_PROGRESS", "2019-05-13T14:52:00Z", RIGHT_HASH) is WriteOutcome.APPLIED
    session = stored(store)
    assert (session.status, session.last_source, session.last_event_id) == ("IN_PROGRESS", "callback", "e1")
    assert session.accepts_callback_secret(RIGHT_HASH)


def test_a_wrong_secret_changes_nothing(store: Store) -> None:
    track(store)
    before = stored(store)
    assert callback(store, "COMPLETED", "2019-05-13T14:54:00Z", WRONG_HASH) is WriteOutcome.SECRET_MISMATCH
    assert stored(store) == before


def test_a_wrong_secret_on_a_final_session_is_still_a_mismatch(store: Store) -> None:
    track(store)
    callback(store, "CANCELLED", "2019-05-13T14:54:00Z", RIGHT_HASH)
    assert callback(store, "CANCELLED", "2019-05-13T14:54:00Z", WRONG_HASH) is WriteOutcome.SECRET_MISMATCH


def test_a_callback_never_creates_a_session(store: Store) -> None:
    assert callback(store, "COMPLETED", "2019-05-13T14:54:00Z", RIGHT_HASH) is WriteOutcome.UNKNOWN_SESSION
    assert store.get_session(SID) is None


def test_a_session_tracked_without_a_secret_is_not_written_by_a_callback(store: Store) -> None:
    store.record_status(update("WAITING", "2019-05-13T14:50:00Z"))
    before = stored(store)
    assert not before.has_callback_secret
    assert callback(store, "COMPLETED", "2019-05-13T14:54:00Z", RIGHT_HASH) is WriteOutcome.NO_SECRET_ON_FILE
    assert stored(store) == before


def test_stale_and_duplicate_callbacks_say_why(store: Store) -> None:
    track(store)
    callback(store, "FAILED", "2019-05-13T14:53:00Z", RIGHT_HASH)
    assert callback(store, "IN_PROGRESS", "2019-05-13T14:52:00Z", RIGHT_HASH) is WriteOutcome.STALE
    assert callback(store, "FAILED", "2019-05-13T14:53:00Z", RIGHT_HASH) is WriteOutcome.DUPLICATE


# -- the poller's due index -------------------------------------------------------------------------


def test_a_created_session_is_due_after_the_first_delay(new_store: Callable[..., Store]) -> None:
    store = new_store(poll_shards=4)
    track(store)
    assert due_ids(store, at(0.99)) == []
    (due,) = all_due(store, at(1))
    assert (due.session_id, due.poll_shard, due.poll_due_at, due.poll_attempts, due.poll_not_found) == (
        SID,
        poll_shard(SID, 4),
        to_epoch_millis(at(1)),
        0,
        0,
    )
    assert (due.status, due.updated_at_ms, due.expires_at) == ("WAITING", 0, EXPIRES)
    assert due.session_url == f"https://klarna/{SID}", "where the poller reads it"


def test_the_due_query_returns_only_due_not_final_sessions_oldest_first(
    new_store: Callable[..., Store], clock: ManualClock
) -> None:
    store = new_store(poll_shards=1)
    for minute, session_id in [(0, "due-a"), (2, "due-b"), (1, "final"), (30, "later")]:
        clock.now = at(minute)
        track(store, session_id)
    store.record_status(update("CANCELLED", at(1), session_id="final"))
    assert due_ids(store, at(5)) == ["due-a", "due-b"]


def test_the_due_query_pages(new_store: Callable[..., Store], clock: ManualClock) -> None:
    store = new_store(poll_shards=1)
    for n in range(5):
        clock.now = at(n)
        track(store, f"due-{n}")
    clock.now = at(60)
    track(store, "later")
    pages = []
    start: Any = None
    while True:
        page = store.due_sessions_page("00", due_by_ms=to_epoch_millis(at(10)), limit=2, start_key=start)
        pages.append(page)
        start = page.next_start_key
        if start is None:
            break
    assert [d.session_id for p in pages for d in p.sessions] == [f"due-{n}" for n in range(5)]
    assert [len(p.sessions) for p in pages] == [2, 2, 1]
    assert sum(p.scanned_count for p in pages) == 5, "a session not yet due is never read"


def test_the_catch_up_query_reads_a_window_of_due_times_and_filters_on_the_last_update(
    new_store: Callable[..., Store], clock: ManualClock
) -> None:
    store = new_store(poll_shards=1)
    # Klarna's own updates, each at its minute: due a minute after they are recorded.
    for minute, session_id in [
        (0, "due-now"),
        (5, "old-update"),
        (20, "recent-a"),
        (30, "recent-b"),
        (90, "beyond"),
    ]:
        clock.now = at(minute)
        store.record_status(update("IN_PROGRESS", at(minute), session_id=session_id))
    clock.now = at(10)
    pages = []
    start: Any = None
    while True:
        page = store.due_sessions_page(
            "00",
            due_after_ms=to_epoch_millis(at(1)),  # after: not the session due exactly then
            due_by_ms=to_epoch_millis(at(60)),
            active_since_ms=to_epoch_millis(at(20)),  # updated then or since
            limit=2,
            start_key=start,
        )
        pages.append(page)
        start = page.next_start_key
        if start is None:
            break
    assert [d.session_id for p in pages for d in p.sessions] == ["recent-a", "recent-b"]
    # The filter drops "old-update" after reading it: read units are spent on what the key range holds.
    assert sum(p.scanned_count for p in pages) == 3
    assert [(d.poll_due_at, d.updated_at_ms) for p in pages for d in p.sessions] == [
        (to_epoch_millis(at(21)), to_epoch_millis(at(20))),
        (to_epoch_millis(at(31)), to_epoch_millis(at(30))),
    ]


def test_sessions_spread_over_every_shard(store: Store) -> None:
    for n in range(64):
        track(store, f"session-{n:03d}")
    due = all_due(store, at(2))
    assert len(due) == 64
    assert {d.poll_shard for d in due} == set(store.poll_shard_ids) == {f"{n:02d}" for n in range(8)}


def test_a_change_puts_the_session_back_at_the_first_delay(store: Store, clock: ManualClock) -> None:
    track(store)
    (due,) = all_due(store, at(2))
    assert store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(30)))
    clock.now = at(3)
    assert outcome(store, "IN_PROGRESS", at(2.5)) is WriteOutcome.APPLIED
    (due,) = all_due(store, at(4))
    assert (due.poll_due_at, due.poll_attempts, due.status) == (to_epoch_millis(at(4)), 0, "IN_PROGRESS")


def test_a_refused_write_leaves_the_schedule_alone(store: Store, clock: ManualClock) -> None:
    track(store)
    clock.now = at(1)
    assert outcome(store, "IN_PROGRESS", at(0.5)) is WriteOutcome.APPLIED
    clock.now = at(5)
    assert outcome(store, "IN_PROGRESS", at(0.5)) is WriteOutcome.DUPLICATE
    assert outcome(store, "WAITING", at(0.1)) is WriteOutcome.STALE
    (due,) = all_due(store, at(10))
    assert due.poll_due_at == to_epoch_millis(at(2)), "due where the applied write put it"


def test_a_final_status_takes_the_session_out_of_the_index(store: Store) -> None:
    track(store)
    assert outcome(store, "COMPLETED", at(1), authorization_token=TOKEN) is WriteOutcome.APPLIED
    assert all_due(store, at(10_000)) == []


def test_reschedule_counts_the_attempt_and_pushes_the_next_poll(store: Store) -> None:
    track(store)
    (due,) = all_due(store, at(2))
    assert store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(3)))
    assert all_due(store, at(2)) == []
    (again,) = all_due(store, at(3))
    assert (again.poll_due_at, again.poll_attempts, again.status) == (to_epoch_millis(at(3)), 1, "WAITING")


def test_reschedule_never_brings_back_a_session_that_became_final(store: Store) -> None:
    track(store)
    (due,) = all_due(store, at(2))
    assert outcome(store, "COMPLETED", at(1.5), authorization_token=TOKEN) is WriteOutcome.APPLIED
    assert not store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(4)))
    assert not store.stop_polling(due)
    assert stored(store).status == "COMPLETED"
    assert all_due(store, at(10_000)) == []


def test_reschedule_keeps_the_schedule_of_a_change_recorded_meanwhile(
    store: Store, clock: ManualClock
) -> None:
    track(store)
    (due,) = all_due(store, at(2))
    # A callback lands between the poller's index read and its reschedule: its reset must stand.
    clock.now = at(2)
    assert outcome(store, "IN_PROGRESS", at(1.9)) is WriteOutcome.APPLIED
    assert not store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(100)))
    (now_due,) = all_due(store, at(3))
    assert (now_due.status, now_due.poll_due_at, now_due.poll_attempts) == (
        "IN_PROGRESS",
        to_epoch_millis(at(3)),
        0,
    )


def test_a_stale_index_copy_cannot_reschedule(store: Store) -> None:
    track(store)
    (due,) = all_due(store, at(2))
    assert store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(3)))
    # The same index copy again (a second, overlapping run; or an index lagging the table).
    assert not store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(9)))
    assert not store.stop_polling(due)
    (again,) = all_due(store, at(3))
    assert again.poll_attempts == 1


def test_the_not_found_count_is_kept_and_cleared(store: Store, clock: ManualClock) -> None:
    track(store)
    (due,) = all_due(store, at(2))
    assert store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(3)), not_found=1)
    (due,) = all_due(store, at(3))
    assert due.poll_not_found == 1
    # A poll that found the session (not_found=0) forgets the count...
    assert store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(5)))
    (due,) = all_due(store, at(5))
    assert due.poll_not_found == 0
    assert store.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(9)), not_found=2)
    # ...and so does any recorded observation (Klarna knew the session after all).
    clock.now = at(6)
    assert outcome(store, "IN_PROGRESS", at(6)) is WriteOutcome.APPLIED
    (due,) = all_due(store, at(7))
    assert due.poll_not_found == 0


def test_stop_polling_takes_the_session_out_and_an_observation_puts_it_back(
    store: Store, clock: ManualClock
) -> None:
    track(store)
    (due,) = all_due(store, at(2))
    assert store.stop_polling(due)
    assert stored(store).status == "WAITING"
    assert all_due(store, at(10_000)) == []
    # Klarna speaking up again (a callback) puts it back on the schedule.
    clock.now = at(5)
    assert callback(store, "IN_PROGRESS", "2026-03-02T12:05:00Z", RIGHT_HASH) is WriteOutcome.APPLIED
    assert due_ids(store, at(6)) == [SID]


@pytest.mark.parametrize("shards", [1, 3])
def test_poll_shard_ids_cover_the_configured_shards(new_store: Callable[..., Store], shards: int) -> None:
    assert new_store(poll_shards=shards).poll_shard_ids == [f"{n:02d}" for n in range(shards)]


# -- the recovery CLI's reads ---------------------------------------------------------------------------


def test_due_session_reads_a_named_sessions_place_in_the_index(store: Store, clock: ManualClock) -> None:
    assert store.due_session(SID) is None, "not tracked"
    track(store)
    (listed,) = all_due(store, at(5))
    assert store.due_session(SID) == listed
    clock.now = at(1)
    store.reschedule_poll(listed, next_due_at_ms=to_epoch_millis(at(9)))
    moved = store.due_session(SID)
    assert moved is not None and (moved.poll_due_at, moved.poll_attempts) == (to_epoch_millis(at(9)), 1)
    assert outcome(store, "COMPLETED", at(2), authorization_token=TOKEN) is WriteOutcome.APPLIED
    assert store.due_session(SID) is None, "final: out of the index"


def test_sessions_recorded_between_finds_the_last_recording_in_the_window(
    store: Store, clock: ManualClock
) -> None:
    ids = [f"s{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    for minute, session_id in enumerate(ids):
        clock.now = at(minute)
        assert outcome(store, "WAITING", at(minute), session_id=session_id) is WriteOutcome.APPLIED
    clock.now = at(10)  # the first is recorded again, outside the window
    assert outcome(store, "IN_PROGRESS", at(10), session_id=ids[0]) is WriteOutcome.APPLIED
    found = sorted(session.session_id for session in store.sessions_recorded_between(at(0), at(2)))
    assert found == sorted(ids[1:3])
    assert list(store.sessions_recorded_between(at(20), at(30))) == []
