"""The poller's side of the table (the due index and its attributes), on DynamoDB Local and on moto,
with the table created from template.yaml. How the due queue behaves is the storage ports' contract,
tested against this repository and the in-memory store alike in test_session_store_contract.py."""

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from hpp_core.models import DueSession, KlarnaSession, StatusUpdate, WriteOutcome
from hpp_core.poller import due_sessions
from hpp_core.repository import (
    DUE_INDEX,
    POLL_ATTEMPTS,
    POLL_DUE_AT,
    POLL_NOT_FOUND,
    POLL_SHARD,
    SessionRepository,
)
from hpp_core.timestamps import to_epoch_millis, utc_now
from tests.support.klarna import KLARNA_SESSION_LIFETIME

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Relative to now: DynamoDB Local deletes rows whose TTL (expires_at + 90 days) has passed.
CREATED = utc_now().replace(microsecond=0)
EXPIRES = CREATED + KLARNA_SESSION_LIFETIME


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
    """Every session due at `moment`, as the poller reads them (all shards, page by page)."""
    return list(due_sessions(repository, due_by_ms=to_epoch_millis(moment), page_size=limit))


def stored_row(repository: SessionRepository, session_id: str) -> dict[str, Any]:
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
    # What the poller decides on and the URL it reads Klarna at; never the token or the secret's hash.
    assert set(projection.get("NonKeyAttributes", [])) == {
        "status",
        "updated_at_ms",
        "expires_at",
        POLL_ATTEMPTS,
        POLL_NOT_FOUND,
        "session_url",
    }


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


def test_the_schedule_lives_in_the_index_attributes(repository: SessionRepository) -> None:
    track(clocked(repository, CREATED), "s1")
    (due,) = all_due(repository, at(2))
    assert repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(3)), not_found=1)
    row = stored_row(repository, "s1")
    assert (row[POLL_DUE_AT], row[POLL_ATTEMPTS], row[POLL_NOT_FOUND]) == (to_epoch_millis(at(3)), 1, 1)
    (due,) = all_due(repository, at(3))
    assert repository.reschedule_poll(due, next_due_at_ms=to_epoch_millis(at(5)))
    assert POLL_NOT_FOUND not in stored_row(repository, "s1"), "absent means 0"
    (due,) = all_due(repository, at(5))
    assert repository.stop_polling(due)
    row = stored_row(repository, "s1")
    assert row["status"] == "WAITING"
    assert not {POLL_SHARD, POLL_DUE_AT, POLL_ATTEMPTS, POLL_NOT_FOUND} & row.keys()
