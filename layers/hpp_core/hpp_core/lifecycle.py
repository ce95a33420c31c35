"""The rules of a session's life in the table, as plain functions over the domain models.

Which write applies (docs/architecture.md, "One write path, final is final"), and how not-final sessions are
spread over the poller's due index. The repository enforces the write rule atomically, as DynamoDB
condition expressions (which cannot call Python), and uses `write_outcome` only to say why DynamoDB
refused a write; the in-memory store the unit tests share applies the rule directly. The same contract
tests run against both, so the two cannot drift apart.
"""

import hashlib

from hpp_core.models import StatusUpdate, TrackedSession, WriteOutcome


def write_outcome(
    update: StatusUpdate, stored: TrackedSession | None, *, callback_secret_hash: str | None
) -> WriteOutcome:
    """What the one conditional write does with `update`, given the session as stored.

    A callback's write (it carries the hash of the secret the URL presented) needs a tracked session
    with that secret on file and never creates one; any other write creates a missing session. A
    stored session then takes only a newer `updated_at` (a final status also wins a tie), and nothing
    at all once it is final.
    """
    if stored is None:
        return WriteOutcome.APPLIED if callback_secret_hash is None else WriteOutcome.UNKNOWN_SESSION
    if callback_secret_hash is not None and not stored.has_callback_secret:
        return WriteOutcome.NO_SECRET_ON_FILE
    if callback_secret_hash is not None and not stored.accepts_callback_secret(callback_secret_hash):
        return WriteOutcome.SECRET_MISMATCH
    return _ordering_outcome(update, stored)


def _ordering_outcome(update: StatusUpdate, stored: TrackedSession) -> WriteOutcome:
    if stored.status == update.status and stored.updated_at_ms == update.updated_at_ms:
        return WriteOutcome.DUPLICATE
    if stored.is_final:
        return WriteOutcome.ALREADY_FINAL
    if supersedes(update, stored):
        return WriteOutcome.APPLIED
    return WriteOutcome.STALE


def supersedes(update: StatusUpdate, stored: TrackedSession) -> bool:
    """Newer than what is stored; at the same millisecond a final status beats a non-final one."""
    if update.is_final:
        return update.updated_at_ms >= stored.updated_at_ms
    return update.updated_at_ms > stored.updated_at_ms


def poll_shard(session_id: str, shards: int) -> str:
    """A stable shard for the poller's due index, so due sessions spread over several partitions."""
    digest = hashlib.sha256(session_id.encode("utf-8")).digest()
    return f"{int.from_bytes(digest[:4], 'big') % shards:02d}"


def poll_shard_ids(shards: int) -> list[str]:
    """Every value `poll_shard` can take (the due index's partitions)."""
    return [f"{shard:02d}" for shard in range(shards)]
