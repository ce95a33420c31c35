"""The poller's own state in the state table (hpp_core.repository.StateRepository), on DynamoDB Local and
on moto, with the table created from template.yaml: what the item looks like, a first run without one,
an item the poller did not write, and storage failures."""

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from hpp_core.errors import StorageUnavailable
from hpp_core.models import PollerState
from hpp_core.repository import POLLER_STATE_KEY, TTL_ATTRIBUTE, StateRepository, to_item
from hpp_core.timestamps import to_epoch_millis, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Relative to now: DynamoDB Local deletes items whose TTL has passed.
NOW = utc_now().replace(microsecond=0)
WEEK_SECONDS = 7 * 86_400


@pytest.fixture
def states(dynamodb: "DynamoDBClient", state_table: str) -> StateRepository:
    return StateRepository(state_table, dynamodb, clock=lambda: NOW)


def test_before_the_first_run_there_is_no_state(states: StateRepository) -> None:
    assert states.poller_state() is None


def test_the_state_is_one_item_kept_a_week_after_the_last_run(
    states: StateRepository, dynamodb: "DynamoDBClient", state_table: str
) -> None:
    state = PollerState(unreported_changes=12.345678901234, reads=987.5, updated_at_ms=1234, catching_up=True)
    states.save_poller_state(state)
    assert states.poller_state() == state
    (item,) = dynamodb.scan(TableName=state_table)["Items"]
    assert item["pk"] == {"S": POLLER_STATE_KEY}
    assert item["catching_up"] == {"BOOL": True}
    assert item["unreported_changes"] == {"N": "12.345678901234"}
    assert int(item[TTL_ATTRIBUTE]["N"]) == to_epoch_millis(NOW) // 1000 + WEEK_SECONDS


def test_a_newer_run_replaces_the_state(states: StateRepository) -> None:
    states.save_poller_state(PollerState(unreported_changes=5, reads=50, updated_at_ms=1, catching_up=True))
    latest = PollerState(unreported_changes=0.25, reads=40, updated_at_ms=2, catching_up=False)
    states.save_poller_state(latest)
    assert states.poller_state() == latest


@pytest.mark.parametrize(
    "attributes",
    [
        {"unreported_changes": "many", "reads": Decimal(3)},
        {"unreported_changes": Decimal(-1), "reads": Decimal(3)},
        {"catching_up": "perhaps"},
        {"updated_at_ms": Decimal("1.5")},
    ],
)
def test_an_item_the_poller_did_not_write_counts_as_no_state(
    states: StateRepository, dynamodb: "DynamoDBClient", state_table: str, attributes: dict[str, object]
) -> None:
    item = to_item({"pk": POLLER_STATE_KEY, **attributes})
    dynamodb.put_item(TableName=state_table, Item=item)
    assert states.poller_state() is None, "started afresh; the run's save overwrites it"


def test_a_table_that_is_not_there_is_storage_unavailable(dynamodb: "DynamoDBClient") -> None:
    missing = StateRepository(f"missing-{uuid.uuid4().hex[:8]}", dynamodb)
    with pytest.raises(StorageUnavailable):
        missing.poller_state()
    with pytest.raises(StorageUnavailable):
        missing.save_poller_state(PollerState())
