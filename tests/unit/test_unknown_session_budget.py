"""The budget of Klarna reads for callbacks naming a session the table does not have: forged callbacks
cost at most the budget's reads, a genuine unknown session is still confirmed within it, and an id
Klarna answered 404 for is not read again for 10 minutes. The core with the shared in-memory stores and
the Klarna simulator in memory; the state store's rules are held to DynamoDB's by the contract suite."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.callbacks import (
    NOT_FOUND_REMEMBERED,
    CallbackResult,
    UnknownSessionEvent,
    UnknownSessionReads,
    handle_callback,
)
from hpp_core.errors import NotFound, UnknownSessionBudgetSpent
from hpp_core.http import error_response
from hpp_core.klarna import KlarnaClient, KlarnaUnavailable
from local.klarna_simulator import KlarnaSimulator
from tests.support.clock import ManualClock
from tests.support.klarna import klarna_reads
from tests.support.memory_store import MemorySessionStore, MemoryStateStore

GENUINE = "39a1c773-bafd-754d-af1f-b30c592f1267"
BUDGET = 5
# 12:07:20 UTC: 40 seconds to the next minute.
START = datetime(2026, 3, 2, 12, 7, 20, 250_000, tzinfo=UTC)


FORGED_SECRET = "a-guess"


def forged_body(session_id: str) -> str:
    """What a forger sends: a completion with a token of its own."""
    session = {"session_id": session_id, "status": "COMPLETED", "updated_at": "2026-03-02T12:00:00Z"}
    return json.dumps({"event_id": "e1", "session": {**session, "authorization_token": "forged-token"}})


class Deployment:
    """The callback core as every instance of one deployment sees it: one table, one state table."""

    def __init__(self, klarna: KlarnaClient, per_minute: int = BUDGET) -> None:
        self.store = MemorySessionStore()
        self.state = MemoryStateStore()
        self.clock = ManualClock(START)
        self.events: list[UnknownSessionEvent] = []
        self.klarna = klarna
        self.unknown = UnknownSessionReads(
            self.state, per_minute=per_minute, report=self.events.append, clock=self.clock
        )

    def callback(
        self, session_id: str, *, secret: str = FORGED_SECRET, body: str | None = None
    ) -> CallbackResult:
        if body is None:
            body = forged_body(session_id)
        return handle_callback(
            {"session_id": session_id, "secret": secret},
            body,
            store=self.store,
            klarna=self.klarna,
            unknown=self.unknown,
        )


@pytest.fixture
def deployment(klarna: KlarnaClient) -> Deployment:
    return Deployment(klarna)


def forged_id() -> str:
    return str(uuid.uuid4())


def test_forged_callbacks_cost_at_most_the_budgets_reads_and_the_rest_are_503_until_the_next_minute(
    deployment: Deployment, simulator: KlarnaSimulator
) -> None:
    answers = []
    for _ in range(50):
        try:
            deployment.callback(forged_id())
        except (NotFound, UnknownSessionBudgetSpent) as exc:
            answers.append(exc)
    assert len(klarna_reads(simulator)) == BUDGET
    assert [type(a) for a in answers] == [NotFound] * BUDGET + [UnknownSessionBudgetSpent] * (50 - BUDGET)
    refused = answers[-1]
    status, body, headers = error_response(refused)
    assert (status, body["error"]["code"]) == (503, "unknown_session_budget_spent")
    assert headers == {"Retry-After": "40"}, "until the next UTC minute, rounded up"
    assert deployment.events.count(UnknownSessionEvent.READ) == BUDGET
    assert deployment.events.count(UnknownSessionEvent.REFUSED) == 50 - BUDGET
    assert deployment.store.session_ids() == [], "nothing stored for a forged callback"


def test_the_budget_is_per_utc_minute(deployment: Deployment, simulator: KlarnaSimulator) -> None:
    for _ in range(BUDGET + 2):
        with pytest.raises((NotFound, UnknownSessionBudgetSpent)):
            deployment.callback(forged_id())
    deployment.clock.advance(seconds=40)  # 12:08:00.250
    with pytest.raises(NotFound):
        deployment.callback(forged_id())
    assert len(klarna_reads(simulator)) == BUDGET + 1


def test_a_genuine_unknown_session_is_confirmed_within_the_budget_despite_forged_traffic(
    deployment: Deployment, simulator: KlarnaSimulator
) -> None:
    for _ in range(BUDGET - 1):
        with pytest.raises(NotFound):
            deployment.callback(forged_id())
    simulator.add_session(GENUINE, status="COMPLETED", authorization_token="klarnas-token")
    result = deployment.callback(GENUINE)
    assert (result.outcome, result.source, result.status) == ("applied", "klarna_read", "COMPLETED")
    stored = deployment.store.get_session(GENUINE)
    assert stored is not None
    assert stored.authorization_token is not None
    assert stored.authorization_token.get_secret_value() == "klarnas-token", "Klarna's, never the body's"


def test_a_genuine_callback_over_the_budget_is_retried_by_klarna_and_confirmed_next_minute(
    deployment: Deployment, simulator: KlarnaSimulator
) -> None:
    for _ in range(BUDGET):
        with pytest.raises(NotFound):
            deployment.callback(forged_id())
    simulator.add_session(GENUINE, status="IN_PROGRESS")
    with pytest.raises(UnknownSessionBudgetSpent) as refused:
        deployment.callback(GENUINE)
    assert refused.value.retry_after_seconds == 40
    assert GENUINE not in klarna_reads(simulator), "over the budget: no read"
    deployment.clock.advance(seconds=refused.value.retry_after_seconds)  # Klarna retries when told
    assert deployment.callback(GENUINE).outcome == "applied"


def test_an_id_klarna_answered_404_for_is_not_read_again_for_ten_minutes(
    deployment: Deployment, simulator: KlarnaSimulator
) -> None:
    forged = forged_id()
    for _ in range(20):
        with pytest.raises(NotFound):
            deployment.callback(forged)
        deployment.clock.advance(seconds=25)  # 20 x 25 s: eight minutes and more
    assert klarna_reads(simulator) == [forged]
    assert deployment.events.count(UnknownSessionEvent.NOT_FOUND_REMEMBERED) == 19
    assert deployment.clock() - START < NOT_FOUND_REMEMBERED
    deployment.clock.now = START + NOT_FOUND_REMEMBERED
    with pytest.raises(NotFound):
        deployment.callback(forged)
    assert klarna_reads(simulator) == [forged, forged], "read again once the 404 is 10 minutes old"


def test_a_remembered_404_spends_no_budget(deployment: Deployment, simulator: KlarnaSimulator) -> None:
    forged = forged_id()
    for _ in range(BUDGET * 3):
        with pytest.raises(NotFound):
            deployment.callback(forged)
    simulator.add_session(GENUINE, status="IN_PROGRESS")
    assert deployment.callback(GENUINE).outcome == "applied"
    assert len(klarna_reads(simulator)) == 2


@pytest.mark.parametrize("body", ["", "not json"])
def test_an_unknown_session_settled_without_a_body_takes_from_the_same_budget(
    klarna: KlarnaClient, simulator: KlarnaSimulator, body: str
) -> None:
    deployment = Deployment(klarna, per_minute=1)
    with pytest.raises(NotFound):
        deployment.callback(forged_id(), body=body)
    with pytest.raises(UnknownSessionBudgetSpent):
        deployment.callback(forged_id(), body=body)
    assert len(klarna_reads(simulator)) == 1


@pytest.mark.parametrize(
    ("secret_on_file", "body"),
    [
        ("the-session-secret", ""),  # an empty body is settled by a read
        (None, None),  # tracked without a secret: nothing vouches for the body, so Klarna is read
    ],
)
def test_a_known_session_confirmed_by_klarna_spends_no_budget(
    klarna: KlarnaClient, simulator: KlarnaSimulator, secret_on_file: str | None, body: str | None
) -> None:
    deployment = Deployment(klarna, per_minute=1)
    secret_hash = hash_callback_secret(secret_on_file) if secret_on_file else None
    deployment.store.create_session(
        GENUINE, expires_at=None, session_url=None, callback_secret_hash=secret_hash
    )
    simulator.add_session(GENUINE, status="BACK", updated_at="2026-03-02T12:01:00Z")
    for _ in range(3):  # a tracked session's reads, not an unknown one's
        deployment.callback(GENUINE, secret=secret_on_file or FORGED_SECRET, body=body)
    assert len(klarna_reads(simulator)) == 3
    assert deployment.state.reads_by_minute == {}
    assert deployment.events == [], "no UnknownSession* metric for a tracked session"


def test_each_read_made_is_reported_once_before_it_is_made_and_nothing_else_is_reported_as_a_read(
    klarna: KlarnaClient, simulator: KlarnaSimulator
) -> None:
    """UnknownSessionReads (alarmed on) counts what strangers can make the tracker spend: one per read,
    reported before it (a read Klarna fails still counts); a remembered 404 or a refusal is no read."""
    deployment = Deployment(klarna, per_minute=3)
    reads_when_reported: list[tuple[UnknownSessionEvent, int]] = []
    deployment.unknown = UnknownSessionReads(
        deployment.state,
        per_minute=3,
        report=lambda event: reads_when_reported.append((event, len(klarna_reads(simulator)))),
        clock=deployment.clock,
    )
    forged = forged_id()
    with pytest.raises(NotFound):
        deployment.callback(forged)  # read: Klarna answers 404
    with pytest.raises(NotFound):
        deployment.callback(forged)  # the 404 remembered: no read
    simulator.fail_next("GET", None, status=500)
    with pytest.raises(KlarnaUnavailable):
        deployment.callback(forged_id(), body="")  # read, and Klarna fails it
    with pytest.raises(NotFound):
        deployment.callback(forged_id())  # read: the budget's third
    with pytest.raises(UnknownSessionBudgetSpent):
        deployment.callback(forged_id())  # refused: no read
    assert reads_when_reported == [
        (UnknownSessionEvent.READ, 0),
        (UnknownSessionEvent.NOT_FOUND_REMEMBERED, 1),
        (UnknownSessionEvent.READ, 1),
        (UnknownSessionEvent.READ, 2),
        (UnknownSessionEvent.REFUSED, 3),
    ]
    assert len(klarna_reads(simulator)) == 3


def test_the_remembered_404_is_per_session(deployment: Deployment, simulator: KlarnaSimulator) -> None:
    with pytest.raises(NotFound):
        deployment.callback(GENUINE)
    deployment.clock.advance(minutes=1)
    simulator.add_session("6a1b0f5e-0000-4c1d-9e8f-000000000001", status="IN_PROGRESS")
    assert deployment.callback("6a1b0f5e-0000-4c1d-9e8f-000000000001").outcome == "applied"
    assert deployment.clock() < START + timedelta(minutes=10)
