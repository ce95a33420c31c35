"""The poller's side of the repository (due index queries, conditional reschedules), on DynamoDB Local
and on moto, with the table created from template.yaml."""

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from hpp_core.models import KlarnaSession, StatusUpdate
from hpp_core.repository import (
    DUE_INDEX,
    POLL_ATTEMPTS,
    POLL_DUE_AT,
    POLL_NOT_FOUND,
    POLL_SHARD,
    DueSession,
    SessionRepository,
    WriteOutcome,
)
from hpp_core.timestamps import to_epoch_millis, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Relative to now: DynamoDB Local deletes rows whose TTL (expires_at + 90 days) has passed.
CREATED = utc_now().replace(microsecond=0)
EXPIRES = CREATED + timedelta(hours=47)


def at(minutes: float) -> datetime:
    return CREATED + timedelta(minutes=minutes)


def clocked(repository: SessionRepository, moment: datetime, shards: int = 8) -> SessionRepository:
    """The same table, seen by a repository whose clock says `moment`."""
    return SessionRepository(
        repository.table_name, repository.client, poll_shards=shards, clock=lambda: moment
    )


def observe(
    repository: SessionRepository, session_id: str, status: str, updated: datetime, source: Any = "callback"
) -> WriteOutcome:
    session = KlarnaSession(session_id=session_id, status=status, updated_at=updated, expires_at=EXPIRES)
    return repository.record_status(StatusUpdate(session=session, source=source)).outcome


def track(repository: SessionRepository, session_id: str) -> None:
    repository.create_session(session_id, expires_at=EXPIRES, session_url=None, callback_secret_hash=None)


def all_due(repository: SessionRepository, moment: datetime, limit: int = 100) -> list[DueSession]:
    found: list[DueSession] = []
    for shard in repository.poll_shard_ids:
        start: Any = None
        while True:
            page = repository.due_sessions_page(
                shard, due_by_ms=to_epoch_millis(moment), limit=limit, start_key=start
            )
            found += page.sessions
            start = page.next_start_key
            if start is None:
                break
    return found


def row(repository: SessionRepository, session_id: str) -> dict[str, Any]:
    item = repository.get_item(session_id)
    assert item is not None
    return item


def test_the_template_defines_the_due_index(dynamodb: "DynamoDBClient", sessions_table: str) -> None:
    table = dynamodb.describe_table(TableName=sessions_table)["Table"]
    (index,) = table.get("GlobalSecondaryIndexes", [])
    assert index["IndexName"] == DUE_INDEX
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [
        (POLL_SHARD, "HASH"),
        (POLL_DUE_AT, "RANGE"),
    ]
    projection = index["Projection"]
    assert projection["ProjectionType"] == "INCLUDE"
    # What the poller decides on, and never the token or the callback secret's hash.
    assert set(projection.get("NonKeyAttributes", [])) == {
        "status",
        "updated_at_ms",
        "expires_at",
        POLL_ATTEMPTS,
        POLL_NOT_FOUND,
    }


def test_due_query_returns_only_due_not_final_sessions_oldest_first(repository: SessionRepository) -> None:
    one_shard = clocked(repository, CREATED, shards=1)
    for minute, session_id in [(0, "due-a"), (2, "due-b"), (1, "final"), (30, "later")]:
        track(clocked(repository, at(minute), shards=1), session_id)
    observe(one_shard, "final", "CANCELLED", at(1))
    due = all_due(one_shard, at(5))
    # Created at minute m, a session is first due at m + 1 (FIRST_POLL_DELAY_SECONDS = 60).
    assert [d.session_id for d in due] == ["due-a", "due-b"]
    first = due[0]
    assert (first.poll_shard, first.poll_due_at, first.poll_attempts, first.poll_not_found) == (
        "00",
        to_epoch_millis(at(1)),
        0,
        0,
    )
    assert (first.status, first.updated_at_ms, first.expires_at) == ("WAITING", 0, EXPIRES)


def test_due_query_pages_and_counts_only_what_it_reads(repository: SessionRepository) -> None:
    one_shard = clocked(repository, CREATED, shards=1)
    for n in range(5):
        track(clocked(repository, at(n), shards=1), f"due-{n}")
    for n in range(7):
        track(clocked(repository, at(60 + n), shards=1), f"later-{n}")
    pages = []
    start: Any = None
    while True:
        page = one_shard.due_sessions_page("00", due_by_ms=to_epoch_millis(at(10)), limit=2, start_key=start)
        pages.append(page)
        start = page.next_start_key
        if start is None:
            break
    assert [d.session_id for p in pages for d in p.sessions] == [f"due-{n}" for n in range(5)]
    assert sum(p.scanned_count for p in pages) == 5, "not-yet-due sessions are never read"


def test_sessions_spread_over_every_shard(repository: SessionRepository) -> None:
    for n in range(64):
        track(repository, f"session-{n:03d}")
    due = all_due(repository, datetime.now(UTC) + timedelta(hours=1))
    assert len(due) == 64
    assert {d.poll_shard for d in due} == set(repository.poll_shard_ids)


def test_reschedule_counts_the_attempt_and_pushes_the_next_poll(repository: SessionRepository) -> None:
    track(clocked(repository, CREATED), "s1")
    (due,) = all_due(repository, at(2))
    assert repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(3)))
    stored = row(repository, "s1")
    assert (stored[POLL_DUE_AT], stored[POLL_ATTEMPTS], stored["status"]) == (
        to_epoch_millis(at(3)),
        1,
        "WAITING",
    )
    assert all_due(repository, at(2)) == []
    (again,) = all_due(repository, at(3))
    assert again.poll_attempts == 1


def test_reschedule_never_resurrects_a_session_that_became_final(repository: SessionRepository) -> None:
    track(clocked(repository, CREATED), "s1")
    (due,) = all_due(repository, at(2))
    assert observe(repository, "s1", "COMPLETED", at(1.5)) is WriteOutcome.APPLIED
    assert not repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(4)))
    assert not repository.stop_polling(due)
    stored = row(repository, "s1")
    assert stored["status"] == "COMPLETED"
    assert not {POLL_SHARD, POLL_DUE_AT, POLL_ATTEMPTS, POLL_NOT_FOUND} & stored.keys()
    assert all_due(repository, at(10_000)) == []


def test_reschedule_keeps_the_schedule_of_a_change_recorded_meanwhile(repository: SessionRepository) -> None:
    track(clocked(repository, CREATED), "s1")
    (due,) = all_due(repository, at(2))
    # A callback lands between the poller's index read and its reschedule: its reset must stand.
    assert observe(clocked(repository, at(2)), "s1", "IN_PROGRESS", at(1.9)) is WriteOutcome.APPLIED
    assert not repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(100)))
    stored = row(repository, "s1")
    assert (stored["status"], stored[POLL_DUE_AT], stored[POLL_ATTEMPTS]) == (
        "IN_PROGRESS",
        to_epoch_millis(at(3)),
        0,
    )


def test_a_stale_index_copy_cannot_reschedule(repository: SessionRepository) -> None:
    track(clocked(repository, CREATED), "s1")
    (due,) = all_due(repository, at(2))
    assert repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(3)))
    # The same index copy again (a second, overlapping run; or an index lagging the table).
    assert not repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(3)))
    assert row(repository, "s1")[POLL_ATTEMPTS] == 1


def test_not_found_count_is_kept_and_cleared(repository: SessionRepository) -> None:
    track(clocked(repository, CREATED), "s1")
    (due,) = all_due(repository, at(2))
    assert repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(3)), not_found=1)
    (due,) = all_due(repository, at(3))
    assert due.poll_not_found == 1
    # A poll that found the session (not_found=0) forgets the count...
    assert repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(5)))
    assert POLL_NOT_FOUND not in row(repository, "s1")
    (due,) = all_due(repository, at(5))
    assert repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(9)), not_found=2)
    # ...and so does any recorded observation (Klarna knew the session after all).
    assert observe(clocked(repository, at(6)), "s1", "IN_PROGRESS", at(6)) is WriteOutcome.APPLIED
    assert POLL_NOT_FOUND not in row(repository, "s1")


def test_stop_polling_takes_the_session_out_of_the_index_and_keeps_its_status(
    repository: SessionRepository,
) -> None:
    track(clocked(repository, CREATED), "s1")
    (due,) = all_due(repository, at(2))
    assert repository.stop_polling(due)
    stored = row(repository, "s1")
    assert stored["status"] == "WAITING"
    assert not {POLL_SHARD, POLL_DUE_AT, POLL_ATTEMPTS} & stored.keys()
    assert all_due(repository, at(10_000)) == []
    # Klarna speaking up again (a callback) puts it back on the schedule.
    assert observe(clocked(repository, at(5)), "s1", "IN_PROGRESS", at(5)) is WriteOutcome.APPLIED
    assert [d.session_id for d in all_due(repository, at(6))] == ["s1"]


def test_the_due_query_reads_exactly_the_due_sessions(
    dynamodb: "DynamoDBClient", repository: SessionRepository
) -> None:
    """Many final and not-yet-due rows; DynamoDB's own counts show only the due ones were read."""
    for n in range(40):
        track(clocked(repository, CREATED), f"final-{n}")
        observe(repository, f"final-{n}", "COMPLETED" if n % 2 else "CANCELLED", at(1))
    for n in range(60):
        track(clocked(repository, at(30 + n)), f"later-{n}")
    for n in range(13):
        track(clocked(repository, at(n)), f"due-{n}")
    scanned: list[int] = []
    dynamodb.meta.events.register(
        "after-call.dynamodb.Query", lambda parsed, **_: scanned.append(parsed.get("ScannedCount", -1))
    )
    due = all_due(repository, at(20), limit=5)
    assert sorted(d.session_id for d in due) == sorted(f"due-{n}" for n in range(13))
    assert sum(scanned) == 13


@pytest.mark.parametrize("shards", [1, 3])
def test_poll_shard_ids_cover_the_configured_shards(repository: SessionRepository, shards: int) -> None:
    assert clocked(repository, CREATED, shards=shards).poll_shard_ids == [f"{n:02d}" for n in range(shards)]
