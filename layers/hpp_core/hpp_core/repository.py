"""The sessions table's adapter: the only code that knows its attribute names and item shapes.

It implements the storage ports (hpp_core.ports) and answers in domain models (hpp_core.models).
`record_status`, the one write path, is a single conditional UpdateItem: it applies only if the incoming
`updated_at` is newer than the stored one and the stored status is not final (hpp_core.lifecycle's rule,
written as a condition expression). When the condition fails, DynamoDB hands back the stored item in the
same call (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), which is enough to say why: stale, duplicate,
already final, wrong secret or unknown session. No read-before-write.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from pydantic import ValidationError

from hpp_core.errors import Conflict, StorageUnavailable
from hpp_core.lifecycle import poll_shard, poll_shard_ids, write_outcome
from hpp_core.models import (
    ConsumerLinks,
    DuePage,
    DueSession,
    PageKey,
    PollerState,
    StatusUpdate,
    TrackedSession,
    WriteOutcome,
    WriteResult,
)
from hpp_core.statuses import FINAL_STATUSES, Status
from hpp_core.timestamps import format_timestamp, parse_timestamp, to_epoch_millis, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Attribute names (the table's contract: docs/architecture.md, "The sessions table"). The session's other
# attributes carry TrackedSession's field names (status, updated_at, updated_at_ms, expires_at, ...).
SECRET_HASH = "callback_secret_sha256"
POLL_SHARD = "poll_shard"
POLL_DUE_AT = "poll_due_at"
POLL_ATTEMPTS = "poll_attempts"
# Consecutive polls Klarna answered 404 before expires_at (the poller's; absent means 0).
POLL_NOT_FOUND = "poll_not_found"
TTL_ATTRIBUTE = "expires_ttl"
# The sparse index of not-final sessions by shard and due time (template.yaml, SessionsTable).
DUE_INDEX = "due-index"
# The state table's key (template.yaml, StateTable), and the prefixes of its items.
STATE_KEY = "pk"
UNKNOWN_SESSION_BUDGET_PREFIX = "unknown-session-budget#"
KLARNA_NOT_FOUND_PREFIX = "klarna-404#"
# A minute's budget item outlives its minute by this much (then TTL removes it).
_BUDGET_KEPT_SECONDS = 3600
# The poller's own state (issue 11), kept a week after the last run.
POLLER_STATE_KEY = "poller#state"
POLLER_STATE_TTL_SECONDS = 7 * 86_400

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_FINAL_PLACEHOLDERS = {f":final{i}": status for i, status in enumerate(sorted(FINAL_STATUSES))}


def to_item(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _attribute_value(value) for name, value in attributes.items()}


def _attribute_value(value: Any) -> dict[str, Any]:
    """boto3's TypeSerializer, with the write path's own two types done directly: it serializes every
    value of every write, and its general type dispatch was a sixth of the callback's own time."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is int:
        return {"N": str(value)}
    return cast("dict[str, Any]", _serializer.serialize(value))


_FINAL_VALUES = to_item(_FINAL_PLACEHOLDERS)  # the same in every write: serialized once


@dataclass(frozen=True)
class _WriteStatement:
    """The one write path's UpdateItem, but for its values."""

    names: Mapping[str, str]
    update_expression: str
    condition: str


@cache  # a few dozen shapes (which optional attributes an update has): built once each, not per write
def _write_statement(attributes: tuple[str, ...], *, final: bool, with_secret: bool) -> _WriteStatement:
    """The update of `attributes` (each set from the value `:<name>`) under lifecycle's rule.

    With `with_secret` it is a callback's write: the row must exist and hold the secret hash
    `:secret_hash`. Without, a missing row is created.
    """
    names = {f"#{name}": name for name in attributes}
    assignments = [f"#{name} = :{name}" for name in attributes]
    assignments.append("created_at = if_not_exists(created_at, :recorded_at)")
    # Any recorded observation means the session exists: forget the poller's 404 count. A final status
    # also leaves the poller's index.
    removals = [POLL_SHARD, POLL_DUE_AT, POLL_ATTEMPTS, POLL_NOT_FOUND] if final else [POLL_NOT_FOUND]
    update_expression = f"SET {', '.join(assignments)} REMOVE {', '.join(removals)}"
    # Equal timestamps: a final status beats a non-final one; otherwise the stored state stays.
    newer = "#updated_at_ms <= :updated_at_ms" if final else "#updated_at_ms < :updated_at_ms"
    not_final = f"NOT #status IN ({', '.join(_FINAL_PLACEHOLDERS)})"
    if with_secret:
        names["#secret_hash"] = SECRET_HASH
        secret = "attribute_exists(session_id) AND #secret_hash = :secret_hash"
        condition = f"{secret} AND {not_final} AND {newer}"
    else:
        condition = f"attribute_not_exists(session_id) OR ({not_final} AND {newer})"
    return _WriteStatement(names, update_expression, condition)


def _with_ints(row: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB's Decimals turned back into ints (every number we store is one); any other number is
    left as it is, for the model to refuse."""
    return {name: _int_if_whole(value) for name, value in row.items()}


def _int_if_whole(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return value


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as a read returns it, deserialized, with ints for its numbers."""
    return {name: _plain_value(value) for name, value in item.items()}


def _plain_value(value: Any) -> Any:
    """One attribute value, as `_int_if_whole(TypeDeserializer().deserialize(value))` gives it, with the
    two types of nearly every stored value read directly: each write reads back its whole row, and the
    general deserializer's dispatch over a dozen values was about 6% of the callback's own work."""
    if len(value) == 1:
        if (text := value.get("S")) is not None:
            return text
        number = value.get("N")
        if number is not None and _is_plain_integer(number):
            return int(number)
    return _int_if_whole(_deserializer.deserialize(value))


_NUMBER_DIGITS = 38  # DynamoDB's precision


def _is_plain_integer(number: str) -> bool:
    """Digits, perhaps signed, within DynamoDB's precision (anything else: the Decimal path decides)."""
    digits = number[1:] if number[:1] == "-" else number
    return 0 < len(digits) <= _NUMBER_DIGITS and digits.isascii() and digits.isdigit()


def _session(row: Mapping[str, Any]) -> TrackedSession:
    """A stored row (deserialized) as the domain sees it: the one row-to-model mapping, for reads, write
    results and the stream's images alike. Raises pydantic's ValidationError for a row that is no session.
    """
    return _session_from_plain(_with_ints(row))


def _session_from_plain(row: Mapping[str, Any]) -> TrackedSession:
    """`_session` of a row whose numbers are already ints (`_plain`'s).

    A row written without the ordering key (by hand, say) is ordered by its `updated_at`.
    """
    fields = {name: value for name, value in row.items() if value is not None}
    session = TrackedSession.model_validate({**fields, "callback_secret_hash": fields.get(SECRET_HASH)})
    if "updated_at_ms" not in fields:
        session = session.model_copy(update={"updated_at_ms": to_epoch_millis(session.updated_at)})
    return session


def session_from_image(image: Mapping[str, Any]) -> TrackedSession | None:
    """A stream record's image of a row (deserialized, as Powertools gives it) as the domain sees it, or
    None when it holds no session state.

    Powertools gives {} for an absent image (INSERT has no old one, REMOVE no new one). An image without
    a status is no session state either: the tracker never writes one, but moto streams the key alone
    first when an update creates a row. Raises pydantic's ValidationError like `_session`.
    """
    return _session(image) if image.get("status") is not None else None


def session_id_in_key(key: Mapping[str, Any]) -> str | None:
    """The session id in a row's key (deserialized), if it is a string."""
    value = key.get("session_id")
    return value if isinstance(value, str) else None


def _due_session(item: Mapping[str, Any]) -> DueSession:
    """An item of the due index (its projection) as the poller sees it."""
    row = _plain(item)
    expires_at = row.get("expires_at")
    return DueSession(
        session_id=str(row["session_id"]),
        poll_shard=str(row[POLL_SHARD]),
        poll_due_at=int(row[POLL_DUE_AT]),
        poll_attempts=int(row.get(POLL_ATTEMPTS, 0)),
        poll_not_found=int(row.get(POLL_NOT_FOUND, 0)),
        status=row.get("status"),
        updated_at_ms=row.get("updated_at_ms"),
        expires_at=parse_timestamp(expires_at) if expires_at else None,
        session_url=row.get("session_url"),
    )


class _ConditionFailed(Exception):
    """A conditional write's condition did not hold; `item` is the stored item if the call asked for it."""

    def __init__(self, item: Mapping[str, Any] | None) -> None:
        super().__init__("condition failed")
        self.item = item


def _dynamodb[T](call: Callable[..., T], **request: Any) -> T:
    """One DynamoDB call: the one place where SDK errors become StorageUnavailable (retryable: 503).

    A failed condition is raised as `_ConditionFailed` instead, for the caller to say what it means.
    """
    try:
        return call(**request)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ConditionalCheckFailedException":
            raise _ConditionFailed(cast("Mapping[str, Any] | None", exc.response.get("Item"))) from None
        raise StorageUnavailable(f"session storage failed ({code or type(exc).__name__})") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise StorageUnavailable(f"session storage failed ({type(exc).__name__})") from None


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
        attributes = self._update_attributes(update)
        statement = _write_statement(
            tuple(attributes), final=update.is_final, with_secret=callback_secret_hash is not None
        )
        values = {f":{name}": value for name, value in attributes.items()}
        if callback_secret_hash is not None:
            values[":secret_hash"] = callback_secret_hash
        try:
            response = _dynamodb(
                self.client.update_item,
                TableName=self.table_name,
                Key=to_item({"session_id": update.session_id}),
                UpdateExpression=statement.update_expression,
                ConditionExpression=statement.condition,
                ExpressionAttributeNames=dict(statement.names),
                ExpressionAttributeValues={**to_item(values), **_FINAL_VALUES},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except _ConditionFailed as refused:
            stored = _session_from_plain(_plain(refused.item)) if refused.item else None
            return WriteResult(_why_refused(update, stored, callback_secret_hash), stored)
        row = response["Attributes"]
        return WriteResult(WriteOutcome.APPLIED, lambda: _session_from_plain(_plain(row)), update.status)

    def _update_attributes(self, update: StatusUpdate) -> dict[str, Any]:
        """What an update writes (attributes without a value are left out)."""
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
        if not update.is_final:
            attributes.update(self._poll_attributes(update.session_id, now))
        return {name: value for name, value in attributes.items() if value is not None}

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
        links: ConsumerLinks | None = None,
    ) -> TrackedSession:
        """Start tracking a session the tracker just created at Klarna, as WAITING, with the URLs and
        consumer links its create returned.

        Its `updated_at_ms` is 0: Klarna's create answer carries no `updated_at`, and the tracker's own
        clock must never make a real Klarna update look stale, so any observation from Klarna wins.
        """
        now = self._clock()
        attributes: dict[str, Any] = {
            **_link_attributes(links),
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
        row = {name: value for name, value in attributes.items() if value is not None}
        try:
            _dynamodb(
                self.client.put_item,
                TableName=self.table_name,
                Item=to_item(row),
                ConditionExpression="attribute_not_exists(session_id)",
            )
        except _ConditionFailed:
            # The session's first callback can beat this write (settled by a Klarna read, which created
            # the row): keep that state and put the secret on file, or every later callback costs a read.
            if callback_secret_hash is not None:
                created = {"session_url": session_url, **_link_attributes(links)}
                self._attach_callback_secret(session_id, callback_secret_hash, created)
            raise Conflict(f"session {session_id} is already tracked") from None
        return _session(row)

    def _attach_callback_secret(self, session_id: str, secret_hash: str, created: Mapping[str, Any]) -> None:
        """Record a session's callback secret (and what its create returned: URL, consumer links) on a
        row that has none; never replace one."""
        values: dict[str, Any] = {":secret_hash": secret_hash}
        names = {"#secret_hash": SECRET_HASH}
        expression = "SET #secret_hash = :secret_hash"
        for index, (name, value) in enumerate(item for item in created.items() if item[1] is not None):
            names[f"#c{index}"], values[f":c{index}"] = name, value
            expression += f", #c{index} = if_not_exists(#c{index}, :c{index})"
        with suppress(_ConditionFailed):  # a secret on file already stays
            _dynamodb(
                self.client.update_item,
                TableName=self.table_name,
                Key=to_item({"session_id": session_id}),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(session_id) AND attribute_not_exists(#secret_hash)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item(values),
            )

    # -- the poller's schedule ----------------------------------------------------------------------

    @property
    def poll_shard_ids(self) -> list[str]:
        return poll_shard_ids(self._poll_shards)

    def due_sessions_page(
        self,
        shard: str,
        *,
        due_by_ms: int,
        limit: int,
        start_key: PageKey | None = None,
        due_after_ms: int | None = None,
        active_since_ms: int | None = None,
    ) -> DuePage:
        """Sessions of one shard due at `due_by_ms` or earlier, oldest first: one Query of the due index.

        The key condition selects exactly the due items, so DynamoDB reads (and bills) nothing else:
        final sessions are not in the index, sessions due later sort after `due_by_ms`. The catch-up's
        `due_after_ms` narrows the key range too; its `active_since_ms` is a filter, so the items it drops
        are read (and billed) all the same.
        """
        names = {"#shard": POLL_SHARD, "#due": POLL_DUE_AT}
        values: dict[str, Any] = {":shard": shard, ":due_by": due_by_ms}
        key_condition = "#shard = :shard AND #due <= :due_by"
        if due_after_ms is not None:
            values[":due_after"] = due_after_ms + 1  # BETWEEN includes both ends; "after" does not
            key_condition = "#shard = :shard AND #due BETWEEN :due_after AND :due_by"
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": key_condition,
            "ScanIndexForward": True,
            "Limit": limit,
        }
        if active_since_ms is not None:
            names["#updated_at_ms"] = "updated_at_ms"
            values[":active_since"] = active_since_ms
            kwargs["FilterExpression"] = "#updated_at_ms >= :active_since"
        kwargs |= {"ExpressionAttributeNames": names, "ExpressionAttributeValues": to_item(values)}
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        response = _dynamodb(self.client.query, **kwargs)
        items = response.get("Items", [])
        return DuePage(
            sessions=[_due_session(item) for item in items],
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
            _dynamodb(
                self.client.update_item,
                TableName=self.table_name,
                Key=to_item({"session_id": due.session_id}),
                UpdateExpression=expression,
                ConditionExpression=(
                    "attribute_exists(#shard) AND #due = :seen_due AND #attempts = :seen_attempts"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item(values),
            )
        except _ConditionFailed:
            return False
        return True

    # -- reads --------------------------------------------------------------------------------------

    def get_item(self, session_id: str, *, consistent: bool = True) -> dict[str, Any] | None:
        """The row exactly as stored, every attribute included: for tests and tools that check the
        table's contract. The core reads `get_session`."""
        item = self._stored_item(session_id, consistent=consistent)
        return _plain(item) if item else None

    def _stored_item(self, session_id: str, *, consistent: bool = True) -> Mapping[str, Any] | None:
        """The row as GetItem returns it (DynamoDB's typed attributes), or None."""
        response = _dynamodb(
            self.client.get_item,
            TableName=self.table_name,
            Key=to_item({"session_id": session_id}),
            ConsistentRead=consistent,
        )
        return response.get("Item")

    def get_session(self, session_id: str) -> TrackedSession | None:
        """The session as stored (a consistent read), or None when it is not tracked."""
        row = self.get_item(session_id)
        return _session_from_plain(row) if row else None

    # -- the recovery CLI's reads (hpp-tracker) -----------------------------------------------------

    def due_session(self, session_id: str) -> DueSession | None:
        """The session as the due index shows it, read from its row (consistently); None when it is not
        tracked or not in the index (final, or no longer polled)."""
        item = self._stored_item(session_id)
        return _due_session(item) if item and POLL_SHARD in item else None

    def sessions_recorded_between(self, start: datetime, end: datetime) -> Iterator[TrackedSession]:
        """Every session whose last status was recorded between `start` and `end` (inclusive): a Scan of
        the whole table (its cost is the table's size), for recovering what the stream no longer holds.

        `recorded_at` is stored in one fixed-width form (UTC, milliseconds, `Z`), so text order is time
        order and the filter can compare strings.
        """
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "FilterExpression": "#recorded_at BETWEEN :start AND :end",
            "ExpressionAttributeNames": {"#recorded_at": "recorded_at"},
            "ExpressionAttributeValues": to_item(
                {":start": format_timestamp(start), ":end": format_timestamp(end)}
            ),
        }
        while True:
            response = _dynamodb(self.client.scan, **request)
            for item in response.get("Items", []):
                yield _session_from_plain(_plain(item))
            if not response.get("LastEvaluatedKey"):
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _link_attributes(links: ConsumerLinks | None) -> dict[str, Any]:
    """The consumer links as row attributes (the distribution module a map without its token)."""
    if links is None:
        return {}
    attributes = links.model_dump(mode="json", exclude_none=True, include=set(ConsumerLinks.model_fields))
    return {name: value for name, value in attributes.items() if value != {}}


def _why_refused(
    update: StatusUpdate, stored: TrackedSession | None, callback_secret_hash: str | None
) -> WriteOutcome:
    """Why DynamoDB refused `update`, by the same rule its condition expresses.

    A row the rule would take although the condition refused it (say one written by hand without
    `updated_at_ms`) is reported stale: never applied when nothing was written.
    """
    outcome = write_outcome(update, stored, callback_secret_hash=callback_secret_hash)
    return WriteOutcome.STALE if outcome is WriteOutcome.APPLIED else outcome


class StateRepository:
    """The state table's adapter (template.yaml, StateTable): small items that are no session's history.

    Counters, short-lived caches and the poller's own state, each under its own key prefix (`pk`), most
    with a TTL in `expires_ttl`. DynamoDB deletes expired items lazily (within days), so a reader checks
    an item's expiry itself rather than trusting that an expired item is gone.
    """

    def __init__(
        self, table_name: str, client: "DynamoDBClient", *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.table_name = table_name
        self.client = client
        self._clock = clock

    # -- unknown sessions: the callback's read budget and Klarna's 404s (issue 13) ------------------
    # `unknown-session-budget#<minute>`: `reads` taken in that UTC minute, by every instance together.
    # `klarna-404#<session id>`: Klarna answered 404 for it; valid until its `expires_ttl` (checked here,
    # since DynamoDB deletes expired items only eventually).

    def take_unknown_session_read(self, minute: datetime, *, limit: int) -> bool:
        """Count one read in `minute`'s budget if fewer than `limit` were counted: one conditional
        UpdateItem, so instances racing for the last read cannot both get it. False: none left."""
        try:
            _dynamodb(
                self.client.update_item,
                TableName=self.table_name,
                Key=to_item({STATE_KEY: f"{UNKNOWN_SESSION_BUDGET_PREFIX}{minute:%Y-%m-%dT%H:%MZ}"}),
                UpdateExpression="SET #ttl = :ttl ADD #reads :one",
                ConditionExpression="attribute_not_exists(#reads) OR #reads < :limit",
                ExpressionAttributeNames={"#reads": "reads", "#ttl": TTL_ATTRIBUTE},
                ExpressionAttributeValues=to_item(
                    {":one": 1, ":limit": limit, ":ttl": _epoch_seconds(minute) + _BUDGET_KEPT_SECONDS}
                ),
            )
        except _ConditionFailed:
            return False
        return True

    def recently_not_found(self, session_id: str, *, now: datetime) -> bool:
        """Klarna answered 404 for `session_id`, and that answer has not expired by `now`."""
        response = _dynamodb(
            self.client.get_item,
            TableName=self.table_name,
            Key=to_item({STATE_KEY: f"{KLARNA_NOT_FOUND_PREFIX}{session_id}"}),
            ProjectionExpression="#ttl",
            ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
        )
        expires = _plain(response.get("Item") or {}).get(TTL_ATTRIBUTE)
        return isinstance(expires, int) and expires > _epoch_seconds(now)

    def remember_not_found(self, session_id: str, *, until: datetime) -> None:
        """Klarna answered 404 for `session_id`: remember it until `until`."""
        _dynamodb(
            self.client.put_item,
            TableName=self.table_name,
            Item=to_item(
                {STATE_KEY: f"{KLARNA_NOT_FOUND_PREFIX}{session_id}", TTL_ATTRIBUTE: _epoch_seconds(until)}
            ),
        )

    # -- the poller's own state (issue 11): one item, written by the poller alone ---------------------

    def poller_state(self) -> PollerState | None:
        """The poller's state as its last run left it; None before the first run, or when the item is
        not one the poller wrote (it is then started afresh, and overwritten at the end of the run)."""
        response = _dynamodb(
            self.client.get_item,
            TableName=self.table_name,
            Key=to_item({STATE_KEY: POLLER_STATE_KEY}),
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            return None
        try:
            return PollerState.model_validate(_plain(item))
        except ValidationError:
            return None

    def save_poller_state(self, state: PollerState) -> None:
        """Replace the poller's state (reserved concurrency 1 makes the poller its only writer)."""
        # Floats as DynamoDB numbers: a Decimal of their shortest repr (the serializer refuses floats).
        fields = {
            name: Decimal(repr(value)) if isinstance(value, float) else value
            for name, value in state.model_dump().items()
        }
        expires = _epoch_seconds(self._clock()) + POLLER_STATE_TTL_SECONDS
        item = {STATE_KEY: POLLER_STATE_KEY, **fields, TTL_ATTRIBUTE: expires}
        _dynamodb(self.client.put_item, TableName=self.table_name, Item=to_item(item))


def _epoch_seconds(moment: datetime) -> int:
    return to_epoch_millis(moment) // 1000
