"""The sessions table as the repository writes it, on DynamoDB Local and on moto: attribute names and
forms (the table's documented contract), and storage failures. The write rules themselves are the
storage ports' contract, tested against this repository and the in-memory store alike in
test_session_store_contract.py."""

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import pytest
from pydantic import ValidationError

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.errors import StorageUnavailable
from hpp_core.models import DueSession, KlarnaSession, StatusUpdate, UpdateSource, WriteOutcome
from hpp_core.repository import (
    POLL_ATTEMPTS,
    POLL_DUE_AT,
    POLL_SHARD,
    SECRET_HASH,
    TTL_ATTRIBUTE,
    SessionRepository,
    to_item,
)
from hpp_core.timestamps import to_epoch_millis

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
SECRET_HASH_VALUE = hash_callback_secret("the-right-secret")


def update(
    status: str,
    updated_at: str,
    *,
    source: UpdateSource = "klarna_read",
    session_id: str = SID,
    **fields: Any,
) -> StatusUpdate:
    session = KlarnaSession.model_validate(
        {
            "session_id": session_id,
            "status": status,
            "updated_at": updated_at,
            "expires_at": "2019-05-15T13:51:43.507Z",
            **fields,
        }
    )
    return StatusUpdate(session=session, source=source, event_id=fields.get("event_id"))


def stored(repository: SessionRepository, session_id: str = SID) -> dict[str, Any]:
    item = repository.get_item(session_id)
    assert item is not None
    return item


def test_a_recorded_status_is_a_row_of_documented_attributes(repository: SessionRepository) -> None:
    result = repository.record_status(update("IN_PROGRESS", "2019-05-13T16:52:10.12+02:00", event_id="e1"))
    assert result.outcome is WriteOutcome.APPLIED
    row = stored(repository)
    assert {name: row[name] for name in ("status", "updated_at", "updated_at_ms", "expires_at")} == {
        "status": "IN_PROGRESS",
        "updated_at": "2019-05-13T14:52:10.120Z",  # the one stored form: UTC, milliseconds, Z
        "updated_at_ms": 1557759130120,
        "expires_at": "2019-05-15T13:51:43.507Z",
    }
    assert (row["last_source"], row["last_event_id"]) == ("klarna_read", "e1")
    assert row["created_at"] == row["recorded_at"]
    assert result.session == repository.get_session(SID)


def test_completion_details_are_stored_as_their_own_attributes(repository: SessionRepository) -> None:
    repository.record_status(
        update("COMPLETED", "2019-05-13T14:54:04.675Z", order_id="order-1", klarna_reference="ZQ6P2V8T")
    )
    row = stored(repository)
    assert (row["order_id"], row["klarna_reference"]) == ("order-1", "ZQ6P2V8T")
    assert "authorization_token" not in row


def test_poll_index_attributes_follow_finality(repository: SessionRepository) -> None:
    repository.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00Z"))
    row = stored(repository)
    assert row[POLL_SHARD] and row[POLL_DUE_AT] > 0 and row[POLL_ATTEMPTS] == 0
    repository.record_status(update("CANCELLED", "2019-05-13T14:53:00Z"))
    row = stored(repository)
    assert not {POLL_SHARD, POLL_DUE_AT, POLL_ATTEMPTS} & row.keys()


def test_ttl_follows_expires_at_plus_retention(dynamodb: "DynamoDBClient", sessions_table: str) -> None:
    repository = SessionRepository(sessions_table, dynamodb, retention_days=2)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)  # a TTL in the future
    repository.record_status(
        update("WAITING", "2019-05-13T14:50:00Z", expires_at=expires.isoformat().replace("+00:00", "Z"))
    )
    assert stored(repository)[TTL_ATTRIBUTE] == int(expires.timestamp()) + 2 * 86_400


def test_only_the_callback_secrets_hash_is_stored_and_writes_keep_it(repository: SessionRepository) -> None:
    repository.create_session(SID, expires_at=None, session_url=None, callback_secret_hash=SECRET_HASH_VALUE)
    row = stored(repository)
    assert (row["status"], row["updated_at_ms"], row[SECRET_HASH]) == ("WAITING", 0, SECRET_HASH_VALUE)
    assert "the-right-secret" not in str(row)
    written = update("IN_PROGRESS", "2019-05-13T14:52:00Z", source="callback")
    assert repository.record_status(written, callback_secret_hash=SECRET_HASH_VALUE).outcome is (
        WriteOutcome.APPLIED
    )
    assert stored(repository)[SECRET_HASH] == SECRET_HASH_VALUE
    session = repository.get_session(SID)
    assert session is not None
    assert session.accepts_callback_secret(SECRET_HASH_VALUE)


def test_a_row_the_condition_cannot_order_is_never_reported_applied(
    dynamodb: "DynamoDBClient", repository: SessionRepository
) -> None:
    """A row written by hand without `updated_at_ms`: DynamoDB refuses every write (the condition
    cannot compare), so the answer must be a no-op outcome, never APPLIED."""
    row = {"session_id": SID, "status": "IN_PROGRESS", "updated_at": "2019-05-13T14:52:00.000Z"}
    dynamodb.put_item(TableName=repository.table_name, Item=to_item(row))
    result = repository.record_status(update("FAILED", "2019-05-13T14:53:00Z"))
    assert result.outcome is WriteOutcome.STALE
    assert stored(repository) == row


def test_an_applied_write_reports_what_it_stored_and_reads_the_row_when_asked(
    dynamodb: "DynamoDBClient", repository: SessionRepository
) -> None:
    """An applied write knows the status it stored; the session after it is read from the write's
    answer when asked for, so a row that is no valid session (edited by hand) fails only that read."""
    repository.create_session(SID, expires_at=None, session_url=None, callback_secret_hash=SECRET_HASH_VALUE)
    result = repository.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00Z"))
    assert (result.outcome, result.stored_status, result.stored_final) == (
        WriteOutcome.APPLIED,
        "IN_PROGRESS",
        False,
    )
    assert result.session is not None and result.session.updated_at_ms == to_epoch_millis(
        datetime(2019, 5, 13, 14, 52, tzinfo=UTC)
    )
    dynamodb.update_item(
        TableName=repository.table_name,
        Key=to_item({"session_id": SID}),
        UpdateExpression="SET session_url = :number",
        ExpressionAttributeValues={":number": {"N": "5"}},
    )
    final = repository.record_status(update("COMPLETED", "2019-05-13T14:53:00Z"))
    assert (final.outcome, final.stored_status, final.stored_final) == (
        WriteOutcome.APPLIED,
        "COMPLETED",
        True,
    )
    with pytest.raises(ValidationError):
        _ = final.session


def test_every_storage_failure_is_storage_unavailable() -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        config=botocore.config.Config(connect_timeout=0.5, retries={"total_max_attempts": 1}),
    )
    repository = SessionRepository("sessions", client)
    due = DueSession(SID, "00", 0, 0, 0, "WAITING", 0, None)
    calls = [
        lambda: repository.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00Z")),
        lambda: repository.create_session(SID, expires_at=None, session_url=None, callback_secret_hash=None),
        lambda: repository.get_session(SID),
        lambda: repository.due_sessions_page("00", due_by_ms=0, limit=1),
        lambda: repository.reschedule_poll(due, next_due_at_ms=1),
        lambda: repository.stop_polling(due),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable, match="session storage failed"):
            call()


def test_a_dynamodb_error_answer_is_storage_unavailable(dynamodb: "DynamoDBClient") -> None:
    repository = SessionRepository("no-such-table", dynamodb)
    with pytest.raises(StorageUnavailable, match="ResourceNotFoundException"):
        repository.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00Z"))
