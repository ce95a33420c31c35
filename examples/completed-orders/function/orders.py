"""Where a completion goes: `place_order`, the hook you replace, and the orders table it is recorded in."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
from pydantic import BaseModel

from hpp_events import CompletedDetail

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class PlacedOrder(BaseModel):
    """What `place_order` made of a completion, recorded with it."""

    # Your order system's id for the order, if it gives one.
    order_reference: str | None = None


def place_order(completion: CompletedDetail) -> PlacedOrder:
    """Place the order of a completed session. Replace this function with your own.

    Called once per completion (the same `event_id`) while the function remembers it (IdempotencyDays);
    called again only after it raised, or after a failure between its return and the record. So make it
    idempotent towards your order system too: pass `completion.event_id` (or `session_id`) as your
    idempotency key or merchant reference.

    `completion.authorization_token` (Klarna Payments) is a SecretStr: `get_secret_value()` gives the
    token for Klarna's Create Order, valid 60 minutes after the authorization; never log it. Otherwise
    Klarna already placed the order: `completion.order_id` and `completion.klarna_reference`.

    Raise to have the completion delivered again (up to the queue's maxReceiveCount, then the
    dead-letter queue); return to have it recorded and never handled again. This default only records.
    """
    del completion
    return PlacedOrder()


class OrdersTable:
    """The orders table: one row per completed session, written once, never with the token."""

    def __init__(self, table_name: str, client: "DynamoDBClient | None" = None) -> None:
        self.table_name = table_name
        self.client = client or boto3.client("dynamodb")

    def record(self, completion: CompletedDetail, placed: PlacedOrder) -> bool:
        """Record the completion; False if its session was recorded already (nothing is overwritten)."""
        item: dict[str, Any] = {
            "session_id": {"S": completion.session_id},
            "event_id": {"S": completion.event_id},
            "completed_at": {"S": completion.model_dump(mode="json", include={"updated_at"})["updated_at"]},
            "recorded_at": {"S": datetime.now(UTC).isoformat(timespec="milliseconds")},
            "payment": {"S": "authorization_token" if completion.authorization_token else "order"},
        }
        optional = {
            "order_id": completion.order_id,
            "klarna_reference": completion.klarna_reference,
            "order_reference": placed.order_reference,
        }
        item.update({name: {"S": value} for name, value in optional.items() if value})
        try:
            self.client.put_item(
                TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(session_id)"
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True
