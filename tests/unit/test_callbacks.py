"""The callback decision logic with an in-memory fake store and the Klarna simulator served in memory
(no I/O): the tracker's own KlarnaClient talks to the same Klarna as the integration tests."""

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.callbacks import handle_callback, parse_callback_body
from hpp_core.errors import BadRequest, DependencyError, Forbidden, NotFound, PayloadTooLarge
from hpp_core.klarna import KlarnaClient, KlarnaUnavailable
from hpp_core.models import StatusUpdate
from hpp_core.repository import SECRET_HASH, WriteOutcome, WriteResult
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import in_memory_klarna_client, simulated_klarna

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
SECRET = "s3cret-value-for-tests-0000000000000"


def body(status: Any = "IN_PROGRESS", session_id: str = SID, **extra: Any) -> str:
    session = {"session_id": session_id, "status": status, "updated_at": "2019-05-13T14:52:10.120Z", **extra}
    return json.dumps({"event_id": "e1", "session": session})


@dataclass
class FakeStore:
    """Answers writes with a scripted outcome and records what it was asked."""

    callback_outcome: WriteOutcome = WriteOutcome.APPLIED
    item: dict[str, Any] | None = None
    writes: list[tuple[StatusUpdate, str | None]] = field(default_factory=list)

    def record_status(self, update: StatusUpdate, *, callback_secret_hash: str | None = None) -> WriteResult:
        self.writes.append((update, callback_secret_hash))
        outcome = self.callback_outcome if callback_secret_hash else WriteOutcome.APPLIED
        row = None if outcome is WriteOutcome.UNKNOWN_SESSION else {"status": update.status}
        return WriteResult(outcome, row)

    def get_item(self, session_id: str, *, consistent: bool = True) -> dict[str, Any] | None:
        return self.item


@pytest.fixture
def simulator() -> KlarnaSimulator:
    """Klarna, never started: served in memory through `klarna`."""
    return simulated_klarna()


@pytest.fixture
def klarna(simulator: KlarnaSimulator) -> KlarnaClient:
    return in_memory_klarna_client(simulator)


def klarna_says(simulator: KlarnaSimulator, status: str, **fields: Any) -> None:
    simulator.add_session(SID, status=status, updated_at="2019-05-13T14:55:00Z", **fields)


def klarna_reads(simulator: KlarnaSimulator) -> list[str]:
    return [request.path.rsplit("/", 1)[-1] for request in simulator.requests_to("GET")]


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
    store = FakeStore()
    result = handle_callback(query(), body(), store=store, klarna=klarna)
    assert (result.outcome, result.source) == ("applied", "callback")
    assert len(store.writes) == 1
    update, presented = store.writes[0]
    assert presented == hash_callback_secret(SECRET)
    assert update.source == "callback"
    assert update.event_id == "e1"
    assert simulator.requests == []


@pytest.mark.parametrize("outcome", [WriteOutcome.STALE, WriteOutcome.DUPLICATE, WriteOutcome.ALREADY_FINAL])
def test_stale_duplicate_and_post_final_are_accepted(outcome: WriteOutcome, klarna: KlarnaClient) -> None:
    result = handle_callback(query(), body(), store=FakeStore(outcome), klarna=klarna)
    assert result.outcome == outcome.value


def test_wrong_secret_is_forbidden_and_klarna_is_not_asked(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    with pytest.raises(Forbidden):
        handle_callback(query(), body(), store=FakeStore(WriteOutcome.SECRET_MISMATCH), klarna=klarna)
    assert simulator.requests == []


@pytest.mark.parametrize("outcome", [WriteOutcome.UNKNOWN_SESSION, WriteOutcome.NO_SECRET_ON_FILE])
def test_unverifiable_callbacks_are_settled_by_klarnas_answer_not_the_body(
    outcome: WriteOutcome, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = FakeStore(outcome)
    klarna_says(simulator, "FAILED")
    result = handle_callback(
        query(), body("COMPLETED", authorization_token="forged"), store=store, klarna=klarna
    )
    assert result.source == "klarna_read"
    recorded, presented = store.writes[-1]
    assert presented is None
    assert recorded.status == "FAILED"
    assert recorded.source == "klarna_read"


def test_unknown_session_that_klarna_does_not_know_is_404(klarna: KlarnaClient) -> None:
    store = FakeStore(WriteOutcome.UNKNOWN_SESSION)
    with pytest.raises(NotFound):
        handle_callback(query(), body(), store=store, klarna=klarna)
    assert len(store.writes) == 1, "only the refused callback write; nothing stored after Klarna's 404"


def test_known_session_that_klarna_has_forgotten_is_acknowledged_without_a_write(
    klarna: KlarnaClient,
) -> None:
    store = FakeStore(item={"session_id": SID})
    result = handle_callback(query(), "", store=store, klarna=klarna)
    assert result.outcome == "klarna_not_found"
    assert store.writes == []


def test_klarna_failure_propagates_so_the_caller_answers_5xx(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = FakeStore(WriteOutcome.UNKNOWN_SESSION)
    simulator.fail_always("GET", None, status=503)
    with pytest.raises(KlarnaUnavailable):
        handle_callback(query(), body(), store=store, klarna=klarna)


@pytest.mark.parametrize("raw", [None, "", "   \n", b"", "not json {", b"\xff\xfe\x00garbage"])
def test_empty_or_unparsable_body_with_a_valid_secret_reads_klarna(
    raw: str | bytes | None, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = FakeStore(item={"session_id": SID, SECRET_HASH: hash_callback_secret(SECRET)})
    klarna_says(simulator, "IN_PROGRESS")
    result = handle_callback(query(), raw, store=store, klarna=klarna)
    assert result.source == "klarna_read"
    assert klarna_reads(simulator) == [SID]


def test_empty_body_with_a_wrong_secret_is_forbidden_before_any_klarna_call(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = FakeStore(item={"session_id": SID, SECRET_HASH: hash_callback_secret(SECRET)})
    klarna_says(simulator, "IN_PROGRESS")
    with pytest.raises(Forbidden):
        handle_callback(query(secret="wrong"), "", store=store, klarna=klarna)
    assert simulator.requests == []


def test_missing_secret_on_a_session_with_one_on_file_is_forbidden(klarna: KlarnaClient) -> None:
    store = FakeStore(item={"session_id": SID, SECRET_HASH: hash_callback_secret(SECRET)})
    with pytest.raises(Forbidden, match="secret"):
        handle_callback(query(secret=None), body(), store=store, klarna=klarna)
    assert store.writes == []


def test_missing_secret_on_an_unknown_session_is_settled_by_klarna(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = FakeStore(item=None)
    klarna_says(simulator, "WAITING")
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
def test_malformed_requests_are_400_and_write_nothing(
    q: dict[str, str], raw: str, message: str, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = FakeStore()
    with pytest.raises(BadRequest, match=message):
        handle_callback(q, raw, store=store, klarna=klarna)
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
    store = FakeStore(item={"session_id": SID, SECRET_HASH: hash_callback_secret(SECRET)})
    klarna_says(simulator, "COMPLETED", authorization_token="from-klarna")
    result = handle_callback(query(), body("COMPLETED"), store=store, klarna=klarna)
    assert result.source == "klarna_read"
    recorded, presented = store.writes[-1]
    assert presented is None
    assert recorded.session.authorization_token is not None
    assert recorded.session.authorization_token.get_secret_value() == "from-klarna"
    with pytest.raises(Forbidden):
        handle_callback(query(secret="wrong"), body("COMPLETED"), store=store, klarna=klarna)


def test_klarna_refusing_the_trackers_read_is_a_5xx_not_a_4xx_to_klarna(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    # A 4xx would tell Klarna its callback was malformed and could stop its retries.
    store = FakeStore(WriteOutcome.UNKNOWN_SESSION)
    simulator.fail_next("GET", None, status=422)
    with pytest.raises(DependencyError) as caught:
        handle_callback(query(), body(), store=store, klarna=klarna)
    assert caught.value.status_code >= 500
    assert len(store.writes) == 1, "nothing recorded after the refused read"
