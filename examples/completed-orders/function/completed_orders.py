"""The example consumer: the tracker's HPP Session Completed events from SQS, each one handled once.

Powertools does the work. Batch processing reports the messages that failed (ReportBatchItemFailures),
so SQS delivers only those again, up to the queue's maxReceiveCount, and then moves them to the
dead-letter queue. Idempotency, keyed on the detail's `event_id` in its own DynamoDB table, makes every
later copy of a completion (a retry, a republish, a replay) return the first one's result without
calling `place_order` again. A message that is not a tracker completion is logged and dropped: no retry
could make it one. The token is never logged (it is a SecretStr until `place_order` reveals it).
"""

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from hpp_events import BrokenTrackerEvent, NotATrackerEvent, SessionCompleted, parse_event
from orders import OrdersTable, place_order


class Settings(BaseModel):
    """The function's environment, checked at start-up (a missing variable is named, not a KeyError)."""

    # An error names the variable, never the environment's values (it holds the session's credentials).
    model_config = ConfigDict(extra="ignore", hide_input_in_errors=True)

    orders_table_name: str = Field(alias="ORDERS_TABLE_NAME", min_length=1)
    idempotency_table_name: str = Field(alias="IDEMPOTENCY_TABLE_NAME", min_length=1)
    tracker_event_source: str = Field(alias="TRACKER_EVENT_SOURCE", default="hpp-tracker", min_length=1)
    idempotency_days: int = Field(alias="IDEMPOTENCY_DAYS", default=35, ge=1)


settings = Settings.model_validate(os.environ)
logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)
orders = OrdersTable(settings.orders_table_name)
idempotency = IdempotencyConfig(
    event_key_jmespath="detail.event_id",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=settings.idempotency_days * 86_400,
)
persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table_name)


@idempotent_function(data_keyword_argument="completion", config=idempotency, persistence_store=persistence)
def handle_completion(completion: SessionCompleted) -> dict[str, Any]:
    """Place the order and record it: once per event_id (Powertools keeps the answer)."""
    detail = completion.detail
    placed = place_order(detail)
    recorded = orders.record(detail, placed)
    logger.info(
        "completion handled",
        extra={"session_id": detail.session_id, "event_id": detail.event_id, "newly_recorded": recorded},
    )
    metrics.add_metric(name="CompletionsHandled", unit=MetricUnit.Count, value=1)
    return {"session_id": detail.session_id, "order_reference": placed.order_reference}


def handle_message(record: SQSRecord) -> None:
    try:
        completion = parse_event(record.body, SessionCompleted, source=settings.tracker_event_source)
    except (NotATrackerEvent, BrokenTrackerEvent) as exc:
        logger.warning(
            "message dropped: not a tracker completion",
            extra={"message_id": record.message_id, "reason": str(exc)[:512]},
        )
        metrics.add_metric(name="MessagesDropped", unit=MetricUnit.Count, value=1)
        return
    try:
        handle_completion(completion=completion)
    except Exception as exc:
        # Only the error's type: a message from place_order could hold anything, the token included.
        logger.error(
            "completion not handled; SQS delivers it again until maxReceiveCount",
            extra={
                "session_id": completion.detail.session_id,
                "event_id": completion.detail.event_id,
                "receive_count": record.attributes.approximate_receive_count,
                "error_type": type(exc).__name__,
            },
        )
        raise


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the messages hold tokens.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    idempotency.register_lambda_context(context)
    metrics.add_metric(name="MessagesReceived", unit=MetricUnit.Count, value=len(event.get("Records", [])))
    return process_partial_response(
        event=event, record_handler=handle_message, processor=processor, context=context
    )
