"""The callback decision logic with the shared in-memory store and the Klarna simulator served in
memory (no I/O): the tracker's own KlarnaClient talks to the same Klarna as the integration tests."""

import json
from collections.abc import Callable
from typing import Any

import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.callbacks import CallbackResult, UnknownSessionReads, handle_callback, parse_callback_body
from hpp_core.errors import BadRequest, DependencyError, Forbidden, NotFound, PayloadTooLarge
from hpp_core.klarna import KlarnaClient, KlarnaUnavailable
from hpp_core.models import KlarnaSession, StatusUpdate, WriteOutcome
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import MOVED_SESSIONS_PATH, klarna_reads
from tests.support.memory_store import MemorySessionStore, MemoryStateStore

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
SECRET = "s3cret-value-for-tests-0000000000000"
KP_URL = "https://api.playground.klarna.com/payments/v1/sessions/0b1d9815-165e-42e2-8867-35bc03789e00"


def body(status: Any = "IN_PROGRESS", session_id: str = SID, **extra: Any) -> str:
    session = {"session_id": session_id, "status": status, "updated_at": "2019-05-13T14:52:10.120Z", **extra}
    return json.dumps({"event_id": "e1", "session": session})


def handle(
    query: dict[str, str],
    body: str | bytes | None,
    *,
    store: MemorySessionStore,
    klarna: KlarnaClient,
    unknown: UnknownSessionReads | None = None,
) -> CallbackResult:
    """handle_callback with a fresh unknown-session budget of 60 a minute, unless the test brings one."""
    unknown = unknown or UnknownSessionReads(MemoryStateStore(), per_minute=60, report=lambda _: None)
    return handle_callback(query, body, store=store, klarna=klarna, unknown=unknown)


def tracked(secret: str | None = SECRET) -> MemorySessionStore:
    """A store tracking SID as the sessions API created it: WAITING, with `secret`'s hash on file."""
    store = MemorySessionStore()
    secret_hash = hash_callback_secret(secret) if secret is not None else None
    store.create_session(SID, expires_at=None, session_url=None, callback_secret_hash=secret_hash)
    return store


def status_of(store: MemorySessionStore) -> str | None:
    session = store.get_session(SID)
    return None if session is None else session.status


def klarna_says(simulator: KlarnaSimulator, status: str, **fields: Any) -> None:
    simulator.add_session(SID, status=status, updated_at="2019-05-13T14:55:00Z", **fields)


def seen(status: str, updated_at: str) -> KlarnaSession:
    """SID as a status update observed it: what a test records in the store beforehand."""
    return KlarnaSession(session_id=SID, status=status, updated_at=updated_at)  # type: ignore[arg-type]


def query(secret: str | None = SECRET, session_id: str | None = SID) -> dict[str, str]:
    q = {}
    if session_id is not None:
        q["session_id"] = session_id
    if secret is not None:
        q["secret"] = secret
    return q


def test_normal_path_is_one_conditional_write_with_the_secret_hash_and_no_klarna_call(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = tracked()
    result = handle(query(), body(), store=store, klarna=klarna)
    assert (result.outcome, result.source, result.status) == ("applied", "callback", "IN_PROGRESS")
    (write,) = store.writes
    assert write.callback_secret_hash == hash_callback_secret(SECRET)
    assert write.update.source == "callback"
    assert write.update.event_id == "e1"
    assert simulator.requests == []


@pytest.mark.parametrize(
    ("recorded_before", "outcome"),
    [
        (seen("FAILED", "2019-05-13T14:55:00Z"), WriteOutcome.STALE),
        (seen("IN_PROGRESS", "2019-05-13T14:52:10.120Z"), WriteOutcome.DUPLICATE),
        (seen("CANCELLED", "2019-05-13T14:51:00Z"), WriteOutcome.ALREADY_FINAL),
    ],
)
def test_stale_duplicate_and_post_final_are_accepted(
    recorded_before: KlarnaSession, outcome: WriteOutcome, klarna: KlarnaClient
) -> None:
    store = tracked()
    store.record_status(StatusUpdate(session=recorded_before, source="klarna_read"))
    result = handle(query(), body(), store=store, klarna=klarna)
    assert result.outcome == outcome.value
    assert status_of(store) == recorded_before.status


def test_wrong_secret_is_forbidden_and_klarna_is_not_asked(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = tracked(secret="another-sessions-secret")
    with pytest.raises(Forbidden):
        handle(query(), body(), store=store, klarna=klarna)
    assert simulator.requests == []
    assert status_of(store) == "WAITING"


@pytest.mark.parametrize(
    ("new_store", "outcome"),
    [
        (MemorySessionStore, WriteOutcome.UNKNOWN_SESSION),
        (lambda: tracked(secret=None), WriteOutcome.NO_SECRET_ON_FILE),
    ],
)
def test_unverifiable_callbacks_are_settled_by_klarnas_answer_not_the_body(
    new_store: Callable[[], MemorySessionStore],
    outcome: WriteOutcome,
    simulator: KlarnaSimulator,
    klarna: KlarnaClient,
) -> None:
    store = new_store()
    klarna_says(simulator, "FAILED")
    result = handle(query(), body("COMPLETED", authorization_token="forged"), store=store, klarna=klarna)
    assert result.source == "klarna_read"
    refused, recorded = store.writes
    assert refused.outcome is outcome
    assert recorded.callback_secret_hash is None
    assert (recorded.update.status, recorded.update.source) == ("FAILED", "klarna_read")
    assert status_of(store) == "FAILED"


def test_unknown_session_that_klarna_does_not_know_is_404(klarna: KlarnaClient) -> None:
    store = MemorySessionStore()
    with pytest.raises(NotFound):
        handle(query(), body(), store=store, klarna=klarna)
    assert [write.outcome for write in store.writes] == [WriteOutcome.UNKNOWN_SESSION]
    assert store.get_session(SID) is None, "nothing stored after Klarna's 404"


def test_known_session_that_klarna_has_forgotten_is_acknowledged_without_a_write(
    klarna: KlarnaClient,
) -> None:
    store = tracked()
    result = handle(query(), "", store=store, klarna=klarna)
    assert result.outcome == "klarna_not_found"
    assert store.writes == []


def test_klarna_failure_propagates_so_the_caller_answers_5xx(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = MemorySessionStore()
    simulator.fail_always("GET", None, status=503)
    with pytest.raises(KlarnaUnavailable):
        handle(query(), body(), store=store, klarna=klarna)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   \n",
        b"",
        "not json {",
        b"\xff\xfe\x00garbage",
        # JSON without a session: a related HPP product retries with `{}`, and a 4xx could end the retries.
        "{}",
        '{"event_id": "e1"}',
        '{"event_id": "e1", "session": null}',
    ],
)
def test_a_body_without_a_usable_session_and_a_valid_secret_reads_klarna(
    raw: str | bytes | None, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = tracked()
    klarna_says(simulator, "IN_PROGRESS")
    result = handle(query(), raw, store=store, klarna=klarna)
    assert result.source == "klarna_read"
    assert klarna_reads(simulator) == [SID]


def test_empty_body_with_a_wrong_secret_is_forbidden_before_any_klarna_call(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = tracked()
    klarna_says(simulator, "IN_PROGRESS")
    with pytest.raises(Forbidden):
        handle(query(secret="wrong"), "", store=store, klarna=klarna)
    assert simulator.requests == []


def test_missing_secret_on_a_session_with_one_on_file_is_forbidden(klarna: KlarnaClient) -> None:
    store = tracked()
    with pytest.raises(Forbidden, match="secret"):
        handle(query(secret=None), body(), store=store, klarna=klarna)
    assert store.writes == []


def test_missing_secret_on_an_unknown_session_is_settled_by_klarna(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = MemorySessionStore()
    klarna_says(simulator, "WAITING")
    assert handle(query(secret=None), body(), store=store, klarna=klarna).source == "klarna_read"


@pytest.mark.parametrize(
    ("q", "raw", "message"),
    [
        ({}, body(), "session_id' is required"),
        (query(session_id="../etc/passwd"), body(), "not a valid session id"),
        (query(session_id="a b"), body(), "not a valid session id"),
        (query(), body(session_id="00000000-aaaa-bbbb-cccc-000000000000"), "differs"),
        (query(), "[1, 2]", "JSON object"),
        (query(), '{"session": {}}', "invalid"),
        (query(), '{"session": "IN_PROGRESS"}', "invalid"),
        (query(), body(status=5), "invalid"),
        (query(secret="x" * 1000), body(), "too long"),
    ],
)
def test_malformed_requests_are_400_and_write_nothing(
    q: dict[str, str], raw: str, message: str, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = tracked()
    with pytest.raises(BadRequest, match=message):
        handle(q, raw, store=store, klarna=klarna)
    assert store.writes == []
    assert simulator.requests == []


def test_bad_field_types_name_the_field() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_callback_body(body(status=5, updated_at="yesterday"))
    assert any(d.startswith("session.status:") for d in caught.value.details)
    assert any(d.startswith("session.updated_at:") for d in caught.value.details)


def test_oversize_body_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        parse_callback_body("x" * (64 * 1024 + 1))


def test_completed_without_token_or_order_id_is_settled_by_klarna_after_the_secret_check(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = tracked()
    klarna_says(simulator, "COMPLETED", authorization_token="from-klarna")
    result = handle(query(), body("COMPLETED"), store=store, klarna=klarna)
    assert result.source == "klarna_read"
    recorded = store.writes[-1]
    assert recorded.callback_secret_hash is None
    assert recorded.update.session.authorization_token is not None
    assert recorded.update.session.authorization_token.get_secret_value() == "from-klarna"
    with pytest.raises(Forbidden):
        handle(query(secret="wrong"), body("COMPLETED"), store=store, klarna=klarna)


def test_klarna_refusing_the_trackers_read_is_a_5xx_not_a_4xx_to_klarna(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    # A 4xx would tell Klarna its callback was malformed and could stop its retries.
    store = MemorySessionStore()
    simulator.fail_next("GET", None, status=422)
    with pytest.raises(DependencyError) as caught:
        handle(query(), body(), store=store, klarna=klarna)
    assert caught.value.status_code >= 500
    assert [write.outcome for write in store.writes] == [WriteOutcome.UNKNOWN_SESSION]
    assert store.get_session(SID) is None, "nothing recorded after the refused read"


def test_klarna_is_read_at_the_session_url_its_create_returned(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    created = klarna.create_session({"payment_session_url": KP_URL}).session
    store = MemorySessionStore()
    store.create_session(
        created.session_id,
        expires_at=None,
        session_url=created.session_url,
        callback_secret_hash=hash_callback_secret(SECRET),
    )
    simulator.act(created.session_id, "IN_PROGRESS", callback=False)
    result = handle(query(session_id=created.session_id), "{}", store=store, klarna=klarna)
    assert (result.source, result.status) == ("klarna_read", "IN_PROGRESS")
    (read,) = simulator.requests_to("GET")
    assert read.path == f"{MOVED_SESSIONS_PATH}/{created.session_id}"
