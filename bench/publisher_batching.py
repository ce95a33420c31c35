"""What batching PutEvents buys the publisher: a stream batch of 100 completions (200 events) published
in chunks of 10 entries, against a baseline of one PutEvents call per event, both to moto's EventBridge
over HTTP in the same run. Prints calls per batch and the time ratio (no absolute claims: moto on this
machine is not EventBridge, but the call count is exactly what Lambda would make).

    PYTHONPATH=layers/hpp_core:functions/publisher:. .venv/bin/python -m bench.publisher_batching
"""

import copy
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import process_partial_response

from hpp_core.event_bus import EntryFailure, EventBus, StreamPublisher
from hpp_core.publishing import BusEvent, events_for_record
from tests.support.lambda_runtime import LambdaContext, load_event
from tests.support.moto_server import MotoServer

RECORDS = 100
ROUNDS = 15


class OneCallPerEvent(EventBus):
    """The baseline: what a record handler calling PutEvents for each event would do."""

    def put(self, events: Sequence[BusEvent]) -> list[EntryFailure | None]:
        return [self._put_chunk([self.entry(event)])[0] for event in events]


def batch() -> dict[str, Any]:
    sample = load_event("publisher/completed_authorization_token")["Records"][0]
    records = []
    for number in range(RECORDS):
        record = copy.deepcopy(sample)
        sid = str(uuid.uuid4())
        record["dynamodb"]["Keys"]["session_id"]["S"] = sid
        record["dynamodb"]["NewImage"]["session_id"]["S"] = sid
        record["dynamodb"]["OldImage"]["session_id"]["S"] = sid
        record["dynamodb"]["SequenceNumber"] = str(4421584500000000017450439091 + number)
        records.append(record)
    return {"Records": records}


def measure(bus: EventBus, event: dict[str, Any]) -> tuple[float, int]:
    calls: list[int] = []
    bus.client.meta.events.register("before-call.events.PutEvents", lambda **_: calls.append(1))
    processor = StreamPublisher(bus, logger=Logger(service="bench", level="WARNING"), metrics=Metrics())
    timings = []
    for _ in range(ROUNDS):
        calls.clear()
        started = time.perf_counter()
        response = process_partial_response(
            event=event,
            record_handler=events_for_record,
            processor=processor,
            context=LambdaContext(timeout_seconds=30),  # type: ignore[arg-type]
        )
        timings.append(time.perf_counter() - started)
        assert response == {"batchItemFailures": []}
        Metrics().clear_metrics()
    return statistics.median(timings), len(calls)


def main() -> None:
    # moto's fake credentials, whatever the shell has: every call goes to moto's endpoint.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_DEFAULT_REGION="eu-west-1")
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"  # noqa: S105
    with MotoServer() as moto:
        client = boto3.client("events", endpoint_url=moto.endpoint_url)
        bus_name = f"bench-{uuid.uuid4().hex[:8]}"
        client.create_event_bus(Name=bus_name)
        event = batch()
        chunked, chunked_calls = measure(EventBus(client, bus_name, "hpp-tracker"), event)
        baseline, baseline_calls = measure(OneCallPerEvent(client, bus_name, "hpp-tracker"), event)
    print(f"batch of {RECORDS} records ({RECORDS * 2} events), median of {ROUNDS} rounds, moto over HTTP")
    print(f"  one call per event (baseline): {baseline_calls:4d} PutEvents calls, {baseline * 1000:8.1f} ms")
    print(f"  chunks of 10 (publisher):      {chunked_calls:4d} PutEvents calls, {chunked * 1000:8.1f} ms")
    calls_ratio, time_ratio = baseline_calls / chunked_calls, baseline / chunked
    print(f"  ratio baseline / publisher:    {calls_ratio:.1f}x calls, {time_ratio:.1f}x time")


if __name__ == "__main__":
    main()
