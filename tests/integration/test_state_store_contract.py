"""The state table's contract (hpp_core.ports.UnknownSessionState): the same tests against the in-memory
store the unit tests share and the repository on DynamoDB Local and on moto.

The budget must hold across instances, so it is also raced from threads (on the memory store and on
DynamoDB Local): exactly `limit` reads are granted however many ask at once. What the items look like
(keys, TTL) is checked at the end.
"""

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from hpp_core.repository import StateRepository
from tests.support.dynamodb_items import from_item
from tests.support.dynamodb_local import ENGINES, engine_client
from tests.support.memory_store import MemoryStateStore
from tests.support.template import create_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

State = MemoryStateStore | StateRepository

# Far in the future: DynamoDB Local deletes items whose TTL has passed, and these tests decide expiry.
MINUTE = datetime(2999, 3, 2, 12, 7, tzinfo=UTC)
SID = "39a1c773-bafd-754d-af1f-b30c592f1267"


@contextmanager
def state_on(backend: str, request: pytest.FixtureRequest) -> Iterator[State]:
    if backend == "memory":
        yield MemoryStateStore()
        return
    with engine_client(backend, request) as client:
        table = f"state-{uuid.uuid4().hex[:12]}"
        create_table(client, "StateTable", table)
        yield StateRepository(table, client)
        client.delete_table(TableName=table)


@pytest.fixture(params=["memory", *ENGINES])
def state(request: pytest.FixtureRequest) -> Iterator[State]:
    with state_on(request.param, request) as store:
        yield store


# moto's in-process backend does not serialise concurrent conditional writes (DynamoDB and DynamoDB
# Local do): raced there, it grants more than the limit, which says nothing about the tracker.
@pytest.fixture(params=["memory", "dynamodb_local"])
def raced_state(request: pytest.FixtureRequest) -> Iterator[State]:
    with state_on(request.param, request) as store:
        yield store


def test_a_minute_grants_exactly_its_limit(state: State) -> None:
    granted = [state.take_unknown_session_read(MINUTE, limit=3) for _ in range(5)]
    assert granted == [True, True, True, False, False]


def test_each_minute_has_a_budget_of_its_own(state: State) -> None:
    assert all(state.take_unknown_session_read(MINUTE, limit=2) for _ in range(2))
    assert not state.take_unknown_session_read(MINUTE, limit=2)
    later = MINUTE + timedelta(minutes=1)
    assert [state.take_unknown_session_read(later, limit=2) for _ in range(3)] == [True, True, False]


def test_a_limit_raised_later_grants_the_difference(state: State) -> None:
    assert [state.take_unknown_session_read(MINUTE, limit=1) for _ in range(2)] == [True, False]
    assert [state.take_unknown_session_read(MINUTE, limit=3) for _ in range(3)] == [True, True, False]


def test_instances_racing_for_the_budget_get_exactly_the_limit_between_them(raced_state: State) -> None:
    state = raced_state
    limit, racers, each = 7, 6, 4
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(racers)

    def race() -> None:
        start.wait()
        mine = [state.take_unknown_session_read(MINUTE, limit=limit) for _ in range(each)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == racers * each
    assert results.count(True) == limit


def test_a_404_is_remembered_until_its_expiry_and_not_a_second_longer(state: State) -> None:
    now = MINUTE
    assert not state.recently_not_found(SID, now=now)
    state.remember_not_found(SID, until=now + timedelta(minutes=10))
    assert state.recently_not_found(SID, now=now)
    assert state.recently_not_found(SID, now=now + timedelta(minutes=10) - timedelta(seconds=1))
    # Still in the table (DynamoDB's TTL deletes lazily), but past its expiry: forgotten.
    assert not state.recently_not_found(SID, now=now + timedelta(minutes=10))
    assert not state.recently_not_found("another-session", now=now)


def test_a_404_remembered_again_extends_it(state: State) -> None:
    state.remember_not_found(SID, until=MINUTE + timedelta(minutes=10))
    state.remember_not_found(SID, until=MINUTE + timedelta(minutes=20))
    assert state.recently_not_found(SID, now=MINUTE + timedelta(minutes=15))


@pytest.fixture(params=ENGINES)
def repository(request: pytest.FixtureRequest) -> Iterator[tuple[StateRepository, "DynamoDBClient"]]:
    with engine_client(request.param, request) as client:
        table = f"state-{uuid.uuid4().hex[:12]}"
        create_table(client, "StateTable", table)
        yield StateRepository(table, client), client
        client.delete_table(TableName=table)


def test_the_items_have_the_agreed_key_prefixes_and_a_ttl(
    repository: tuple[StateRepository, "DynamoDBClient"],
) -> None:
    state, client = repository
    state.take_unknown_session_read(MINUTE, limit=5)
    state.take_unknown_session_read(MINUTE, limit=5)
    until = MINUTE + timedelta(minutes=10)
    state.remember_not_found(SID, until=until)
    items = {
        item["pk"]: item
        for item in (from_item(raw) for raw in client.scan(TableName=state.table_name)["Items"])
    }
    budget = items["unknown-session-budget#2999-03-02T12:07Z"]
    assert budget["reads"] == 2
    # Kept an hour past its minute, then TTL removes it.
    assert budget["expires_ttl"] == int((MINUTE + timedelta(hours=1)).timestamp())
    assert items[f"klarna-404#{SID}"]["expires_ttl"] == int(until.timestamp())
    assert len(items) == 2
