"""The one repository for the sessions table, and its one write path.

`record_status` is a single conditional UpdateItem: it applies only if the incoming `updated_at` is newer
than the stored one and the stored status is not final. When the condition fails, DynamoDB hands back the
stored item in the same call (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), which is enough to say why:
stale, duplicate, already final, wrong secret or unknown session. No read-before-write.
"""

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from hpp_core.callback_secrets import hashes_match
from hpp_core.errors import Conflict, StorageUnavailable
from hpp_core.models import StatusUpdate, TrackedSession
from hpp_core.statuses import FINAL_STATUSES, Status, is_final
from hpp_core.timestamps import format_timestamp, parse_timestamp, to_epoch_millis, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Attribute names (the table's contract; see README "The sessions table").
SECRET_HASH = "callback_secret_sha256"
POLL_SHARD = "poll_shard"
POLL_DUE_AT = "poll_due_at"
POLL_ATTEMPTS = "poll_attempts"
# Consecutive polls Klarna answered 404 before expires_at (the poller's; absent means 0).
POLL_NOT_FOUND = "poll_not_found"
TTL_ATTRIBUTE = "expires_ttl"
# The sparse index of not-final sessions by shard and due time (template.yaml, SessionsTable).
DUE_INDEX = "due-index"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_FINAL_PLACEHOLDERS = {f":final{i}": status for i, status in enumerate(sorted(FINAL_STATUSES))}


class WriteOutcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"
    ALREADY_FINAL = "already_final"
    # Callback writes only: the presented secret does not match the stored hash.
    SECRET_MISMATCH = "secret_mismatch"
    # Callback writes only: no row for the session.
    UNKNOWN_SESSION = "unknown_session"
    # Callback writes only: the row was tracked without a callback secret (PUT /sessions, adopted).
    NO_SECRET_ON_FILE = "no_secret_on_file"


ACCEPTED_OUTCOMES = frozenset(
    {WriteOutcome.APPLIED, WriteOutcome.STALE, WriteOutcome.DUPLICATE, WriteOutcome.ALREADY_FINAL}
)


@dataclass(frozen=True)
class WriteResult:
    outcome: WriteOutcome
    # The row after the write when applied, the row as it stood when not (None for an unknown session).
    item: Mapping[str, Any] | None

    @property
    def stored_status(self) -> str | None:
        return None if self.item is None else self.item.get("status")


@dataclass(frozen=True)
class DueSession:
    """A not-final session as the due index shows it (the index's projection, possibly a little stale)."""

    session_id: str
    poll_shard: str
    poll_due_at: int
    poll_attempts: int
    poll_not_found: int
    status: str | None
    updated_at_ms: int | None
    expires_at: datetime | None

    @classmethod
    def from_index_item(cls, item: Mapping[str, Any]) -> "DueSession":
        plain = _plain(item)
        expires_at = plain.get("expires_at")
        return cls(
            session_id=str(plain["session_id"]),
            poll_shard=str(plain[POLL_SHARD]),
            poll_due_at=int(plain[POLL_DUE_AT]),
            poll_attempts=int(plain.get(POLL_ATTEMPTS, 0)),
            poll_not_found=int(plain.get(POLL_NOT_FOUND, 0)),
            status=plain.get("status"),
            updated_at_ms=plain.get("updated_at_ms"),
            expires_at=parse_timestamp(expires_at) if expires_at else None,
        )


@dataclass(frozen=True)
class DuePage:
    """One page of a due query: the sessions, what DynamoDB read for it, and where to go on."""

    sessions: list[DueSession]
    scanned_count: int
    next_start_key: Mapping[str, Any] | None


def poll_shard(session_id: str, shards: int) -> str:
    """A stable shard for the poller's sparse index, so due sessions spread over several partitions."""
    digest = hashlib.sha256(session_id.encode("utf-8")).digest()
    return f"{int.from_bytes(digest[:4], 'big') % shards:02d}"


def to_item(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in attributes.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """Deserialized, with DynamoDB's Decimals turned back into ints (every number we store is one)."""
    return {
        name: int(value) if isinstance(value, Decimal) else value for name, value in from_item(item).items()
    }


class SessionRepository:
    def __init__(
        self,
        table_name: str,
        client: "DynamoDBClient",
        *,
        poll_shards: int = 8,
        first_poll_delay_seconds: int = 60,
        retention_days: int = 90,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.table_name = table_name
        self.client = client
        self._poll_shards = poll_shards
        self._first_poll_delay_ms = first_poll_delay_seconds * 1000
        self._retention_seconds = retention_days * 86_400
        self._clock = clock

    # -- the write path ---------------------------------------------------------------------------

    def record_status(self, update: StatusUpdate, *, callback_secret_hash: str | None = None) -> WriteResult:
        """Record `update` if it is newer than the stored state and that state is not final.

        With `callback_secret_hash` the write is a callback's: it also requires an existing row whose
        stored secret hash equals it (checked by DynamoDB, re-checked in constant time on failure), and
        never creates a row. Without it (Klarna's own answers) a missing row is created.
        """
        names, values, update_expression = self._update_expression(update)
        values.update(_FINAL_PLACEHOLDERS)
        # Equal timestamps: a final status beats a non-final one; otherwise the stored state stays.
        newer = "#updated_at_ms <= :updated_at_ms" if update.is_final else "#updated_at_ms < :updated_at_ms"
        not_final = f"NOT #status IN ({', '.join(_FINAL_PLACEHOLDERS)})"
        if callback_secret_hash is None:
            condition = f"attribute_not_exists(session_id) OR ({not_final} AND {newer})"
        else:
            names["#secret_hash"] = SECRET_HASH
            values[":secret_hash"] = callback_secret_hash
            condition = (
                f"attribute_exists(session_id) AND #secret_hash = :secret_hash AND {not_final} AND {newer}"
            )
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=to_item({"session_id": update.session_id}),
                UpdateExpression=update_expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item(values),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise _storage_error(exc) from None
            old = cast(Mapping[str, Any] | None, exc.response.get("Item"))
            stored = _plain(old) if old else None
            return WriteResult(_why_not_applied(update, stored, callback_secret_hash), stored)
        except botocore.exceptions.BotoCoreError as exc:
            raise _storage_error(exc) from None
        return WriteResult(WriteOutcome.APPLIED, _plain(response.get("Attributes", {})))

    def _update_expression(self, update: StatusUpdate) -> tuple[dict[str, str], dict[str, Any], str]:
        now = self._clock()
        session = update.session
        token = session.authorization_token
        attributes: dict[str, Any] = {
            "status": update.status,
            "updated_at": update.updated_at,
            "updated_at_ms": update.updated_at_ms,
            "recorded_at": format_timestamp(now),
            "last_source": update.source,
            "authorization_token": token.get_secret_value() if token else None,
            "order_id": session.order_id,
            "klarna_reference": session.klarna_reference,
            "last_event_id": update.event_id,
            **self._expiry_attributes(session.expires_at),
        }
        # Any recorded observation means the session exists: forget the poller's 404 count.
        removals: list[str] = [POLL_NOT_FOUND]
        if update.is_final:
            removals = [POLL_SHARD, POLL_DUE_AT, POLL_ATTEMPTS, POLL_NOT_FOUND]
        else:
            attributes.update(self._poll_attributes(update.session_id, now))
        names = {f"#{name}": name for name, value in attributes.items() if value is not None}
        values = {f":{name}": value for name, value in attributes.items() if value is not None}
        assignments = [f"#{name} = :{name}" for name, value in attributes.items() if value is not None]
        assignments.append("created_at = if_not_exists(created_at, :recorded_at)")
        expression = "SET " + ", ".join(assignments)
        if removals:
            expression += " REMOVE " + ", ".join(removals)
        return names, values, expression

    def _expiry_attributes(self, expires_at: datetime | None) -> dict[str, Any]:
        if expires_at is None:
            return {}
        attributes: dict[str, Any] = {"expires_at": format_timestamp(expires_at)}
        if self._retention_seconds:
            attributes[TTL_ATTRIBUTE] = to_epoch_millis(expires_at) // 1000 + self._retention_seconds
        return attributes

    def _poll_attributes(self, session_id: str, now: datetime) -> dict[str, Any]:
        """Puts a not-final session in the poller's sparse index, due after the first (shortest) delay.

        A recorded change resets the backoff; a final status removes these attributes instead.
        """
        return {
            POLL_SHARD: poll_shard(session_id, self._poll_shards),
            POLL_DUE_AT: to_epoch_millis(now) + self._first_poll_delay_ms,
            POLL_ATTEMPTS: 0,
        }

    def create_session(
        self,
        session_id: str,
        *,
        expires_at: datetime | None,
        session_url: str | None,
        callback_secret_hash: str | None,
    ) -> dict[str, Any]:
        """Start tracking a session the tracker just created at Klarna, as WAITING.

        Its `updated_at_ms` is 0: Klarna's create answer carries no `updated_at`, and the tracker's own
        clock must never make a real Klarna update look stale, so any observation from Klarna wins.
        """
        now = self._clock()
        attributes: dict[str, Any] = {
            "session_id": session_id,
            "status": Status.WAITING.value,
            "updated_at": format_timestamp(now),
            "updated_at_ms": 0,
            "created_at": format_timestamp(now),
            "recorded_at": format_timestamp(now),
            "last_source": "sessions_api",
            "session_url": session_url,
            SECRET_HASH: callback_secret_hash,
            **self._expiry_attributes(expires_at),
            **self._poll_attributes(session_id, now),
        }
        item = {name: value for name, value in attributes.items() if value is not None}
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=to_item(item),
                ConditionExpression="attribute_not_exists(session_id)",
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise _storage_error(exc) from None
            # The session's first callback can beat this write (settled by a Klarna read, which created
            # the row): keep that state and put the secret on file, or every later callback costs a read.
            if callback_secret_hash is not None:
                self._attach_callback_secret(session_id, callback_secret_hash, session_url)
            raise Conflict(f"session {session_id} is already tracked") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _storage_error(exc) from None
        return item

    def _attach_callback_secret(self, session_id: str, secret_hash: str, session_url: str | None) -> None:
        """Record a session's callback secret (and URL) on a row that has none; never replace one."""
        values: dict[str, Any] = {":secret_hash": secret_hash}
        expression = "SET #secret_hash = :secret_hash"
        if session_url is not None:
            values[":session_url"] = session_url
            expression += ", session_url = if_not_exists(session_url, :session_url)"
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=to_item({"session_id": session_id}),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(session_id) AND attribute_not_exists(#secret_hash)",
                ExpressionAttributeNames={"#secret_hash": SECRET_HASH},
                ExpressionAttributeValues=to_item(values),
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise _storage_error(exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _storage_error(exc) from None

    # -- the poller's schedule ----------------------------------------------------------------------

    @property
    def poll_shard_ids(self) -> list[str]:
        """Every value `poll_shard` can take (the due index's partitions)."""
        return [f"{shard:02d}" for shard in range(self._poll_shards)]

    def due_sessions_page(
        self,
        shard: str,
        *,
        due_by_ms: int,
        limit: int,
        start_key: Mapping[str, Any] | None = None,
    ) -> DuePage:
        """Sessions of one shard due at `due_by_ms` or earlier, oldest first: one Query of the due index.

        The key condition selects exactly the due items, so DynamoDB reads (and bills) nothing else:
        final sessions are not in the index, sessions due later sort after `due_by_ms`.
        """
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "#shard = :shard AND #due <= :due_by",
            "ExpressionAttributeNames": {"#shard": POLL_SHARD, "#due": POLL_DUE_AT},
            "ExpressionAttributeValues": to_item({":shard": shard, ":due_by": due_by_ms}),
            "ScanIndexForward": True,
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        try:
            response = self.client.query(**kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise _storage_error(exc) from None
        items = response.get("Items", [])
        return DuePage(
            sessions=[DueSession.from_index_item(item) for item in items],
            scanned_count=int(response.get("ScannedCount", len(items))),
            next_start_key=response.get("LastEvaluatedKey") or None,
        )

    def reschedule_poll(self, due: DueSession, *, next_due_at_ms: int, not_found: int = 0) -> bool:
        """Polled and nothing recorded: count the attempt and push the next poll out to `next_due_at_ms`.

        Conditional on the row being as the index showed it: still not final (`poll_shard` exists) and no
        change recorded since (same `poll_due_at` and `poll_attempts`; a recorded change resets both).
        So it never puts a final session back in the index and never undoes a concurrent change's reset.
        False when the condition failed: the row moved on and its own schedule stands.
        """
        values: dict[str, Any] = {
            ":next_due": next_due_at_ms,
            ":attempts": due.poll_attempts + 1,
            ":seen_due": due.poll_due_at,
            ":seen_attempts": due.poll_attempts,
        }
        expression = "SET #due = :next_due, #attempts = :attempts"
        if not_found:
            values[":not_found"] = not_found
            expression += ", #not_found = :not_found"
        else:
            expression += " REMOVE #not_found"
        return self._poll_write(due, expression, values)

    def stop_polling(self, due: DueSession) -> bool:
        """Take a not-final session out of the due index (same condition as `reschedule_poll`)."""
        return self._poll_write(
            due,
            "REMOVE #shard, #due, #attempts, #not_found",
            {
                ":seen_due": due.poll_due_at,
                ":seen_attempts": due.poll_attempts,
            },
        )

    def _poll_write(self, due: DueSession, expression: str, values: dict[str, Any]) -> bool:
        names = {"#shard": POLL_SHARD, "#due": POLL_DUE_AT, "#attempts": POLL_ATTEMPTS}
        if "#not_found" in expression:
            names["#not_found"] = POLL_NOT_FOUND
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=to_item({"session_id": due.session_id}),
                UpdateExpression=expression,
                ConditionExpression=(
                    "attribute_exists(#shard) AND #due = :seen_due AND #attempts = :seen_attempts"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item(values),
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise _storage_error(exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _storage_error(exc) from None
        return True

    # -- reads --------------------------------------------------------------------------------------

    def get_item(self, session_id: str, *, consistent: bool = True) -> dict[str, Any] | None:
        """The raw stored row (including the secret hash: for the core's own decisions only)."""
        try:
            response = self.client.get_item(
                TableName=self.table_name,
                Key=to_item({"session_id": session_id}),
                ConsistentRead=consistent,
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise _storage_error(exc) from None
        item = response.get("Item")
        return _plain(item) if item else None

    def get_session(self, session_id: str) -> TrackedSession | None:
        item = self.get_item(session_id)
        return TrackedSession.model_validate(item) if item else None


def _why_not_applied(
    update: StatusUpdate, stored: Mapping[str, Any] | None, presented_hash: str | None
) -> WriteOutcome:
    if stored is None:
        return WriteOutcome.UNKNOWN_SESSION
    if presented_hash is not None:
        stored_hash = stored.get(SECRET_HASH)
        if not stored_hash:
            return WriteOutcome.NO_SECRET_ON_FILE
        if not hashes_match(str(stored_hash), presented_hash):
            return WriteOutcome.SECRET_MISMATCH
    if stored.get("status") == update.status and stored.get("updated_at_ms") == update.updated_at_ms:
        return WriteOutcome.DUPLICATE
    if is_final(str(stored.get("status"))):
        return WriteOutcome.ALREADY_FINAL
    return WriteOutcome.STALE


def _storage_error(exc: Exception) -> StorageUnavailable:
    code = ""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
    return StorageUnavailable(f"session storage failed ({code or type(exc).__name__})")
