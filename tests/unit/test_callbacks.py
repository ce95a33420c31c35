"""The callback decision logic with the shared in-memory store and a scripted Klarna (no I/O)."""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.callbacks import handle_callback, parse_callback_body
from hpp_core.errors import BadRequest, DependencyError, Forbidden, NotFound, PayloadTooLarge
from hpp_core.klarna import NO_RETRY, KlarnaNotFound, KlarnaRejected, KlarnaUnavailable, RetryPolicy
from hpp_core.models import KlarnaSession, StatusUpdate, WriteOutcome
from tests.support.memory_store import MemorySessionStore

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
SECRET = "s3cret-value-for-tests-0000000000000"


def body(status: Any = "IN_PROGRESS", session_id: str = SID, **extra: Any) -> str:
    session = {"session_id": session_id, "status": status, "updated_at": "2019-05-13T14:52:10.120Z", **extra}
    return json.dumps({"event_id": "e1", "session": session})


def tracked(secret: str | None = SECRET) -> MemorySessionStore:
    """A store tracking SID as the sessions API created it: WAITING, with `secret`'s hash on file."""
    store = MemorySessionStore()
    secret_hash = hash_callback_secret(secret) if secret is not None else None
    store.create_session(SID, expires_at=None, session_url=None, callback_secret_hash=secret_hash)
    return store


def status_of(store: MemorySessionStore) -> str | None:
    session = store.get_session(SID)
    return None if session is None else session.status


@dataclass
class FakeKlarna:
    answer: KlarnaSession | Exception | None = None
    reads: list[str] = field(default_factory=list)

    def read_session(self, session_id: str, *, retry: RetryPolicy = NO_RETRY) -> KlarnaSession:
        self.reads.append(session_id)
        if isinstance(self.answer, Exception):
            raise self.answer
        assert self.answer is not None
        return self.answer


def klarna_says(status: str, updated_at: str = "2019-05-13T14:55:00Z") -> KlarnaSession:
    return KlarnaSession(session_id=SID, status=status, updated_at=updated_at)  # type: ignore[arg-type]


def query(secret: str | None = SECRET, session_id: str | None = SID) -> dict[str, str]:
    q = {}
    if session_id is not None:
        q["session_id"] = session_id
    if secret is not None:
        q["secret"] = secret
    return q


def test_normal_path_is_one_conditional_write_with_the_secret_hash_and_no_klarna_call() -> None:
    store, klarna = tracked(), FakeKlarna()
    result = handle_callback(query(), body(), store=store, klarna=klarna)
    assert (result.outcome, result.source, result.status) == ("applied", "callback", "IN_PROGRESS")
    (write,) = store.writes
    assert write.callback_secret_hash == hash_callback_secret(SECRET)
    assert write.update.source == "callback"
    assert write.update.event_id == "e1"
    assert klarna.reads == []


@pytest.mark.parametrize(
    ("recorded_before", "outcome"),
    [
        (klarna_says("FAILED", "2019-05-13T14:55:00Z"), WriteOutcome.STALE),
        (klarna_says("IN_PROGRESS", "2019-05-13T14:52:10.120Z"), WriteOutcome.DUPLICATE),
        (klarna_says("CANCELLED", "2019-05-13T14:51:00Z"), WriteOutcome.ALREADY_FINAL),
    ],
)
def test_stale_duplicate_and_post_final_are_accepted(
    recorded_before: KlarnaSession, outcome: WriteOutcome
) -> None:
    store = tracked()
    store.record_status(StatusUpdate(session=recorded_before, source="klarna_read"))
    result = handle_callback(query(), body(), store=store, klarna=FakeKlarna())
    assert result.outcome == outcome.value
    assert status_of(store) == recorded_before.status


def test_wrong_secret_is_forbidden_and_klarna_is_not_asked() -> None:
    store, klarna = tracked(secret="another-sessions-secret"), FakeKlarna()
    with pytest.raises(Forbidden):
        handle_callback(query(), body(), store=store, klarna=klarna)
    assert klarna.reads == []
    assert status_of(store) == "WAITING"


@pytest.mark.parametrize(
    ("new_store", "outcome"),
    [
        (MemorySessionStore, WriteOutcome.UNKNOWN_SESSION),
        (lambda: tracked(secret=None), WriteOutcome.NO_SECRET_ON_FILE),
    ],
)
def test_unverifiable_callbacks_are_settled_by_klarnas_answer_not_the_body(
    new_store: Callable[[], MemorySessionStore], outcome: WriteOutcome
) -> None:
    store = new_store()
    klarna = FakeKlarna(klarna_says("FAILED"))
    result = handle_callback(
        query(), body("COMPLETED", authorization_token="forged"), store=store, klarna=klarna
    )
    assert result.source == "klarna_read"
    refused, recorded = store.writes
    assert refused.outcome is outcome
    assert recorded.callback_secret_hash is None
    assert (recorded.update.status, recorded.update.source) == ("FAILED", "klarna_read")
    assert status_of(store) == "FAILED"


def test_unknown_session_that_klarna_does_not_know_is_404() -> None:
    store = MemorySessionStore()
    with pytest.raises(NotFound):
        handle_callback(
            query(), body(), store=store, klarna=FakeKlarna(KlarnaNotFound("gone", http_status=404))
        )
    assert [write.outcome for write in store.writes] == [WriteOutcome.UNKNOWN_SESSION]
    assert store.get_session(SID) is None, "nothing stored after Klarna's 404"


def test_known_session_that_klarna_has_forgotten_is_acknowledged_without_a_write() -> None:
    store = tracked()
    result = handle_callback(
        query(), "", store=store, klarna=FakeKlarna(KlarnaNotFound("gone", http_status=404))
    )
    assert result.outcome == "klarna_not_found"
    assert store.writes == []


def test_klarna_failure_propagates_so_the_caller_answers_5xx() -> None:
    store = MemorySessionStore()
    with pytest.raises(KlarnaUnavailable):
        handle_callback(query(), body(), store=store, klarna=FakeKlarna(KlarnaUnavailable("down")))


@pytest.mark.parametrize("raw", [None, "", "   \n", b"", "not json {", b"\xff\xfe\x00garbage"])
def test_empty_or_unparsable_body_with_a_valid_secret_reads_klarna(raw: str | bytes | None) -> None:
    store = tracked()
    klarna = FakeKlarna(klarna_says("IN_PROGRESS"))
    result = handle_callback(query(), raw, store=store, klarna=klarna)
    assert result.source == "klarna_read"
    assert klarna.reads == [SID]


def test_empty_body_with_a_wrong_secret_is_forbidden_before_any_klarna_call() -> None:
    store = tracked()
    klarna = FakeKlarna(klarna_says("IN_PROGRESS"))
    with pytest.raises(Forbidden):
        handle_callback(query(secret="wrong"), "", store=store, klarna=klarna)
    assert klarna.reads == []


def test_missing_secret_on_a_session_with_one_on_file_is_forbidden() -> None:
    store = tracked()
    with pytest.raises(Forbidden, match="secret"):
        handle_callback(query(secret=None), body(), store=store, klarna=FakeKlarna())
    assert store.writes == []


def test_missing_secret_on_an_unknown_session_is_settled_by_klarna() -> None:
    store = MemorySessionStore()
    klarna = FakeKlarna(klarna_says("WAITING"))
    assert handle_callback(query(secret=None), body(), store=store, klarna=klarna).source == "klarna_read"


@pytest.mark.parametrize(
    ("q", "raw", "message"),
    [
        ({}, body(), "session_id' is required"),
        (query(session_id="../etc/passwd"), body(), "not a valid session id"),
        (query(session_id="a b"), body(), "not a valid session id"),
        (query(), body(session_id="00000000-aaaa-bbbb-cccc-000000000000"), "differs"),
        (query(), "[1, 2]", "JSON object"),
        (query(), '{"event_id": "e1"}', "invalid"),
        (query(), body(status=5), "invalid"),
        (query(secret="x" * 1000), body(), "too long"),
    ],
)
def test_malformed_requests_are_400_and_write_nothing(q: dict[str, str], raw: str, message: str) -> None:
    store, klarna = tracked(), FakeKlarna()
    with pytest.raises(BadRequest, match=message):
        handle_callback(q, raw, store=store, klarna=klarna)
    assert store.writes == []
    assert klarna.reads == []


def test_bad_field_types_name_the_field() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_callback_body(body(status=5, updated_at="yesterday"))
    assert any(d.startswith("session.status:") for d in caught.value.details)
    assert any(d.startswith("session.updated_at:") for d in caught.value.details)


def test_oversize_body_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_callback_body("x" * (64 * 1024 + 1))


def test_completed_without_token_or_order_id_is_settled_by_klarna_after_the_secret_check() -> None:
    store = tracked()
    klarna = FakeKlarna(
        KlarnaSession(
            session_id=SID,
            status="COMPLETED",
            updated_at="2019-05-13T14:55:00Z",  # type: ignore[arg-type]
            authorization_token="from-klarna",  # type: ignore[arg-type]
        )
    )
    result = handle_callback(query(), body("COMPLETED"), store=store, klarna=klarna)
    assert result.source == "klarna_read"
    recorded = store.writes[-1]
    assert recorded.callback_secret_hash is None
    assert recorded.update.session.authorization_token is not None
    assert recorded.update.session.authorization_token.get_secret_value() == "from-klarna"
    with pytest.raises(Forbidden):
        handle_callback(query(secret="wrong"), body("COMPLETED"), store=store, klarna=klarna)


def test_klarna_refusing_the_trackers_read_is_a_5xx_not_a_4xx_to_klarna() -> None:
    # A 4xx would tell Klarna its callback was malformed and could stop its retries.
    store = MemorySessionStore()
    rejected = KlarnaRejected("refused", http_status=422, error_code="UNPROCESSABLE")
    with pytest.raises(DependencyError) as caught:
        handle_callback(query(), body(), store=store, klarna=FakeKlarna(rejected))
    assert caught.value.status_code >= 500
    assert [write.outcome for write in store.writes] == [WriteOutcome.UNKNOWN_SESSION]
    assert store.get_session(SID) is None, "nothing recorded after the refused read"
