"""Property: whatever the order and duplication of deliveries, the stored state is the newest by
`updated_at` up to the first final one. Run against the repository on DynamoDB Local and against the
in-memory store the unit tests share (which must apply the same rules)."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.models import ACCEPTED_OUTCOMES, KlarnaSession, StatusUpdate, WriteOutcome
from hpp_core.repository import SessionRepository
from hpp_core.statuses import is_final
from hpp_core.timestamps import to_epoch_millis
from tests.support.memory_store import MemorySessionStore
from tests.support.template import create_table

NON_FINAL = ["WAITING", "IN_PROGRESS", "FAILED", "BACK", "ERROR", "MANUAL_ID_CHECK", "TIMEOUT"]
FINAL = ["COMPLETED", "CANCELLED", "DISABLED"]
START = datetime(2019, 5, 13, 14, 50, tzinfo=UTC)
SECRET = "property-secret"

Event = tuple[str, datetime]


Store = SessionRepository | MemorySessionStore


@pytest.fixture(scope="module", params=["dynamodb_local", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """One store for every example: each example uses a session of its own."""
    if request.param == "memory":
        yield MemorySessionStore()
        return
    client = boto3.client("dynamodb", endpoint_url=request.getfixturevalue("dynamodb_local").endpoint_url)
    name = f"ordering-{uuid.uuid4().hex[:8]}"
    create_table(client, "SessionsTable", name)
    yield SessionRepository(name, client)
    client.delete_table(TableName=name)


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """What Klarna really did to one session: strictly increasing times, at most one final, last."""
    statuses = draw(st.lists(st.sampled_from(NON_FINAL), min_size=1, max_size=7))
    gaps = draw(st.lists(st.integers(1, 90_000), min_size=len(statuses), max_size=len(statuses)))
    events: list[Event] = []
    moment = START
    for status, gap in zip(statuses, gaps, strict=True):
        moment += timedelta(milliseconds=gap)
        events.append((status, moment))
    if draw(st.booleans()):
        # A final status may share the last non-final's millisecond: the final one must win.
        same_ms = draw(st.booleans())
        events.append((draw(st.sampled_from(FINAL)), moment if same_ms else moment + timedelta(seconds=1)))
    return events


def render(moment: datetime, style: int) -> str:
    """The same instant in the forms Klarna may use."""
    if style == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if style == 1:
        return moment.isoformat()
    return moment.astimezone(timezone(timedelta(hours=-5))).isoformat()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), data=st.data())
def test_stored_state_is_the_newest_delivered_up_to_the_first_final(
    store: Store, history: list[Event], data: st.DataObject
) -> None:
    session_id = str(uuid.uuid4())
    store.create_session(
        session_id, expires_at=None, session_url=None, callback_secret_hash=hash_callback_secret(SECRET)
    )
    # Any subset (lost callbacks), any order, any duplicates; each through a callback or a Klarna read.
    deliveries = data.draw(st.lists(st.integers(0, len(history) - 1), min_size=1, max_size=3 * len(history)))
    for index in deliveries:
        status, moment = history[index]
        session = KlarnaSession.model_validate(
            {
                "session_id": session_id,
                "status": status,
                "updated_at": render(moment, data.draw(st.integers(0, 2))),
            }
        )
        via_callback = data.draw(st.booleans())
        result = store.record_status(
            StatusUpdate(session=session, source="callback" if via_callback else "klarna_read"),
            callback_secret_hash=hash_callback_secret(SECRET) if via_callback else None,
        )
        assert result.outcome in ACCEPTED_OUTCOMES

    newest_status, newest_moment = max(
        (history[i] for i in set(deliveries)), key=lambda event: (event[1], is_final(event[0]))
    )
    stored = store.get_session(session_id)
    assert stored is not None
    assert (stored.status, stored.updated_at_ms) == (newest_status, to_epoch_millis(newest_moment))

    # Once final, nothing moves it: not even a later-stamped regression.
    if is_final(newest_status):
        late = KlarnaSession.model_validate(
            {
                "session_id": session_id,
                "status": "IN_PROGRESS",
                "updated_at": render(newest_moment + timedelta(hours=1), 0),
            }
        )
        outcome = store.record_status(StatusUpdate(session=late, source="poller")).outcome
        assert outcome is WriteOutcome.ALREADY_FINAL
        assert store.get_session(session_id) == stored
