"""The one write path, on DynamoDB Local and on moto."""

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.errors import Conflict, StorageUnavailable
from hpp_core.models import KlarnaSession, StatusUpdate, UpdateSource
from hpp_core.repository import (
    POLL_ATTEMPTS,
    POLL_DUE_AT,
    POLL_SHARD,
    SECRET_HASH,
    TTL_ATTRIBUTE,
    SessionRepository,
    WriteOutcome,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"
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


def outcome(repository: SessionRepository, status: str, updated_at: str, **kwargs: Any) -> WriteOutcome:
    return repository.record_status(update(status, updated_at, **kwargs)).outcome


def test_first_observation_creates_the_row(repository: SessionRepository) -> None:
    result = repository.record_status(update("IN_PROGRESS", "2019-05-13T14:52:10.120Z"))
    assert result.outcome is WriteOutcome.APPLIED
    row = stored(repository)
    assert row["status"] == "IN_PROGRESS"
    assert row["updated_at"] == "2019-05-13T14:52:10.120Z"
    assert row["expires_at"] == "2019-05-15T13:51:43.507Z"
    assert result.session == repository.get_session(SID)


def test_newer_applies_older_is_stale_same_is_duplicate(repository: SessionRepository) -> None:
    assert outcome(repository, "IN_PROGRESS", "2019-05-13T14:52:00.000Z") is WriteOutcome.APPLIED
    assert outcome(repository, "FAILED", "2019-05-13T14:53:00.000Z") is WriteOutcome.APPLIED
    assert outcome(repository, "IN_PROGRESS", "2019-05-13T14:52:00.000Z") is WriteOutcome.STALE
    assert outcome(repository, "FAILED", "2019-05-13T14:53:00.000Z") is WriteOutcome.DUPLICATE
    assert outcome(repository, "FAILED", "2019-05-13T16:53:00+02:00") is WriteOutcome.DUPLICATE
    assert stored(repository)["status"] == "FAILED"


def test_order_is_decided_on_milliseconds_not_on_text(repository: SessionRepository) -> None:
    # "…:04Z" sorts after "…:04.001Z" as text; the later instant must still win.
    assert outcome(repository, "IN_PROGRESS", "2019-05-13T14:54:04Z") is WriteOutcome.APPLIED
    assert outcome(repository, "FAILED", "2019-05-13T14:54:04.001Z") is WriteOutcome.APPLIED
    assert outcome(repository, "IN_PROGRESS", "2019-05-13T16:54:04+02:00") is WriteOutcome.STALE
    assert stored(repository)["status"] == "FAILED"


def test_final_is_final(repository: SessionRepository) -> None:
    assert outcome(repository, "COMPLETED", "2019-05-13T14:54:04.675Z", authorization_token=TOKEN) is (
        WriteOutcome.APPLIED
    )
    # A regression with a *later* timestamp is refused all the same.
    assert outcome(repository, "IN_PROGRESS", "2019-05-13T15:00:00.000Z") is WriteOutcome.ALREADY_FINAL
    assert outcome(repository, "CANCELLED", "2019-05-13T15:00:00.000Z") is WriteOutcome.ALREADY_FINAL
    assert outcome(repository, "COMPLETED", "2019-05-13T14:54:04.675Z", authorization_token=TOKEN) is (
        WriteOutcome.DUPLICATE
    )
    row = stored(repository)
    assert (row["status"], row["authorization_token"]) == ("COMPLETED", TOKEN)


@pytest.mark.parametrize("final", ["COMPLETED", "CANCELLED", "DISABLED", "EXPIRED"])
def test_equal_timestamp_final_beats_non_final_in_either_order(
    repository: SessionRepository, final: str
) -> None:
    at = "2019-05-13T14:54:04.675Z"
    assert outcome(repository, "IN_PROGRESS", at, session_id="a-first") is WriteOutcome.APPLIED
    assert outcome(repository, final, at, session_id="a-first") is WriteOutcome.APPLIED
    assert outcome(repository, final, at, session_id="b-first") is WriteOutcome.APPLIED
    assert outcome(repository, "IN_PROGRESS", at, session_id="b-first") is WriteOutcome.ALREADY_FINAL
    assert stored(repository, "a-first")["status"] == stored(repository, "b-first")["status"] == final


def test_equal_timestamp_two_non_final_keeps_the_stored(repository: SessionRepository) -> None:
    at = "2019-05-13T14:54:04.675Z"
    assert outcome(repository, "FAILED", at) is WriteOutcome.APPLIED
    assert outcome(repository, "BACK", at) is WriteOutcome.STALE
    assert stored(repository)["status"] == "FAILED"


def test_unknown_status_is_stored_and_not_final(repository: SessionRepository) -> None:
    assert outcome(repository, "PAUSED_BY_CONSUMER", "2019-05-13T14:53:00Z") is WriteOutcome.APPLIED
    assert stored(repository)["status"] == "PAUSED_BY_CONSUMER"
    assert POLL_SHARD in stored(repository), "not final, so the poller keeps reading it"
    assert outcome(repository, "COMPLETED", "2019-05-13T14:54:00Z") is WriteOutcome.APPLIED


def test_completion_details_are_stored(repository: SessionRepository) -> None:
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


class TestCallbackWrites:
    """Writes that carry a presented secret hash: folded into the one conditional write."""

    @pytest.fixture
    def tracked(self, repository: SessionRepository) -> SessionRepository:
        repository.create_session(
            SID,
            expires_at=datetime(2019, 5, 15, 13, 51, 43, 507000, tzinfo=UTC),
            session_url="https://api.playground.klarna.com/hpp/v1/sessions/" + SID,
            callback_secret_hash=SECRET_HASH_VALUE,
        )
        return repository

    def callback(self, repository: SessionRepository, status: str, at: str, secret_hash: str) -> WriteOutcome:
        result = repository.record_status(
            update(status, at, source="callback", event_id="e1"), callback_secret_hash=secret_hash
        )
        return result.outcome

    def test_created_session_is_waiting_and_any_klarna_update_beats_it(
        self, tracked: SessionRepository
    ) -> None:
        row = stored(tracked)
        assert (row["status"], row["updated_at_ms"], row[SECRET_HASH]) == ("WAITING", 0, SECRET_HASH_VALUE)
        # Klarna's clock may be behind ours: an update stamped before our creation time still applies.
        assert self.callback(tracked, "IN_PROGRESS", "2001-01-01T00:00:00Z", SECRET_HASH_VALUE) is (
            WriteOutcome.APPLIED
        )

    def test_creating_twice_is_a_conflict(self, tracked: SessionRepository) -> None:
        with pytest.raises(Conflict):
            tracked.create_session(SID, expires_at=None, session_url=None, callback_secret_hash=None)

    def test_a_first_callback_that_beat_the_create_gets_the_secret_attached(
        self, repository: SessionRepository
    ) -> None:
        # The callback for an unknown session was confirmed by Klarna and created the row first.
        repository.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00Z"))
        with pytest.raises(Conflict):
            repository.create_session(
                SID,
                expires_at=None,
                session_url="https://klarna/session",
                callback_secret_hash=SECRET_HASH_VALUE,
            )
        row = stored(repository)
        assert (row["status"], row[SECRET_HASH], row["session_url"]) == (
            "IN_PROGRESS",
            SECRET_HASH_VALUE,
            "https://klarna/session",
        )
        # So the next callback is checked against it (one write, no Klarna read) ...
        assert self.callback(repository, "FAILED", "2019-05-13T14:53:00Z", SECRET_HASH_VALUE) is (
            WriteOutcome.APPLIED
        )
        # ... and a second create never replaces a secret on file.
        other = hash_callback_secret("another")
        with pytest.raises(Conflict):
            repository.create_session(SID, expires_at=None, session_url=None, callback_secret_hash=other)
        assert stored(repository)[SECRET_HASH] == SECRET_HASH_VALUE

    def test_right_secret_applies(self, tracked: SessionRepository) -> None:
        assert self.callback(tracked, "IN_PROGRESS", "2019-05-13T14:52:00Z", SECRET_HASH_VALUE) is (
            WriteOutcome.APPLIED
        )
        row = stored(tracked)
        assert (row["status"], row["last_source"], row["last_event_id"]) == ("IN_PROGRESS", "callback", "e1")
        assert row[SECRET_HASH] == SECRET_HASH_VALUE, "recording a status keeps the secret"

    def test_wrong_secret_changes_nothing(self, tracked: SessionRepository) -> None:
        before = stored(tracked)
        wrong = hash_callback_secret("guess")
        assert (
            self.callback(tracked, "COMPLETED", "2019-05-13T14:54:00Z", wrong) is WriteOutcome.SECRET_MISMATCH
        )
        assert stored(tracked) == before

    def test_wrong_secret_on_a_final_session_is_still_a_mismatch(self, tracked: SessionRepository) -> None:
        self.callback(tracked, "CANCELLED", "2019-05-13T14:54:00Z", SECRET_HASH_VALUE)
        wrong = hash_callback_secret("guess")
        assert (
            self.callback(tracked, "CANCELLED", "2019-05-13T14:54:00Z", wrong) is WriteOutcome.SECRET_MISMATCH
        )

    def test_unknown_session_is_not_created_by_a_callback(self, repository: SessionRepository) -> None:
        assert self.callback(repository, "COMPLETED", "2019-05-13T14:54:00Z", SECRET_HASH_VALUE) is (
            WriteOutcome.UNKNOWN_SESSION
        )
        assert repository.get_item(SID) is None

    def test_session_tracked_without_a_secret_is_not_written_by_a_callback(
        self, repository: SessionRepository
    ) -> None:
        repository.record_status(update("WAITING", "2019-05-13T14:50:00Z"))
        before = stored(repository)
        assert self.callback(repository, "COMPLETED", "2019-05-13T14:54:00Z", SECRET_HASH_VALUE) is (
            WriteOutcome.NO_SECRET_ON_FILE
        )
        assert stored(repository) == before

    def test_stale_and_duplicate_callbacks_report_why(self, tracked: SessionRepository) -> None:
        self.callback(tracked, "FAILED", "2019-05-13T14:53:00Z", SECRET_HASH_VALUE)
        assert self.callback(tracked, "IN_PROGRESS", "2019-05-13T14:52:00Z", SECRET_HASH_VALUE) is (
            WriteOutcome.STALE
        )
        assert self.callback(tracked, "FAILED", "2019-05-13T14:53:00Z", SECRET_HASH_VALUE) is (
            WriteOutcome.DUPLICATE
        )


def test_storage_down_raises_storage_unavailable() -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
        config=botocore.config.Config(connect_timeout=0.5, retries={"total_max_attempts": 1}),
    )
    repository = SessionRepository("sessions", client)
    with pytest.raises(StorageUnavailable):
        repository.record_status(update("IN_PROGRESS", "2019-05-13T14:52:00Z"))
    with pytest.raises(StorageUnavailable):
        repository.get_item(SID)
