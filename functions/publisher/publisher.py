"""Lambda on the sessions table's stream: every stored status change, as events on the bus.

Thin on purpose: Powertools' batch processing walks the records, the core decides each record's events
(`events_for_record`), and `StreamPublisher` puts them on the bus in PutEvents chunks and reports the
records whose entries failed, so that Lambda retries only from there. Nothing here logs a record: the
images hold the authorization token and the callback secret's hash.
"""

import gc

# No collections during init: what it builds (the SDK, Powertools, models, clients) lives as long as the
# execution environment, and collecting while it grows was a quarter of the cold start (docs/performance.md).
gc.disable()

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from hpp_core.event_bus import EventBus, StreamPublisher, events_client
from hpp_core.logs import service_logger
from hpp_core.publishing import PublisherSettings, events_for_record
from hpp_core.settings import load_settings
from hpp_core.tracing import traced_handler

settings = load_settings(PublisherSettings)
logger = service_logger()
metrics = Metrics()
bus = EventBus(events_client(), settings.event_bus_name, settings.event_source)
processor = StreamPublisher(bus, logger=logger, metrics=metrics)


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the records hold tokens.
@traced_handler
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=events_for_record, processor=processor, context=context
    )


# Init ends here: what it built is frozen (never scanned by the collector again), and collection resumes
# for what the invocations allocate.
gc.freeze()
gc.enable()
