"""`hpp-tracker redrive` on the local stack with every PutEvents entry of the publisher failing (the fault
proxy between the functions and moto): the publisher gives up on every record into its failure queue,
and redrive then publishes exactly the missing events (the ids and previous statuses the publisher
would have given them, each once) and empties the queue. The CLI talks to moto directly, without faults,
as an operator's machine reaches AWS.

The stream pump retries fast here (the template's 10 retries in well under a second), so the queue fills
in seconds instead of a minute.
"""

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpp_core.publishing import COMPLETED, STATUS_CHANGED, event_id
from hpp_core.timestamps import parse_timestamp, to_epoch_millis
from local.emulators.fault_proxy import AwsFaults
from tests.support.recovery import Stack, local_stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("recovery-redrive")]

# What reaches the stream per session here: created (WAITING), IN_PROGRESS, COMPLETED.
RECORDS_PER_SESSION = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with local_stack(
        tmp_path_factory.mktemp("redrive"),
        poll_interval=3600.0,
        aws_faults=AwsFaults(put_events_failure_rate=1.0),
        pump_poll_interval=0.1,
        pump_retry_delay=0.01,
        pump_max_retry_delay=0.02,
    ) as running:
        yield running


def completed_through_callbacks(stack: Stack, tmp_path: Path) -> dict[str, Any]:
    """A session created through the tracker and completed with Klarna's callbacks (all applied)."""
    session_id = stack.create_session(tmp_path)["session_id"]
    in_progress = stack.klarna_acts(session_id, "IN_PROGRESS")
    stack.wait_stored(session_id, "IN_PROGRESS")
    completed = stack.klarna_acts(session_id, "COMPLETED")
    stack.wait_stored(session_id, "COMPLETED")
    return {"session_id": session_id, "in_progress": in_progress, "completed": completed}


def expected_events(session: dict[str, Any]) -> Counter[tuple[str, str, str | None]]:
    """(event id, detail type, previous status) of every event the publisher should have published."""
    sid = session["session_id"]
    started = to_epoch_millis(parse_timestamp(session["in_progress"]["updated_at"]))
    done = to_epoch_millis(parse_timestamp(session["completed"]["updated_at"]))
    return Counter(
        [
            # The tracker stores a session it creates as WAITING at 0 (any Klarna update beats it).
            (event_id(STATUS_CHANGED, sid, "WAITING", 0), STATUS_CHANGED, None),
            (event_id(STATUS_CHANGED, sid, "IN_PROGRESS", started), STATUS_CHANGED, "WAITING"),
            (event_id(STATUS_CHANGED, sid, "COMPLETED", done), STATUS_CHANGED, "IN_PROGRESS"),
            (event_id(COMPLETED, sid, "COMPLETED", done), COMPLETED, None),
        ]
    )


def wait_given_up(stack: Stack, records: int, timeout: float = 60) -> None:
    """Until the publisher's stream pump has sent `records` records to the failure queue."""
    pump = stack.local.pumps[0]
    deadline = time.monotonic() + timeout
    while pump.stats.sent_to_destination < records and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pump.stats.sent_to_destination == records, pump.stats


def test_redrive_publishes_exactly_the_missing_events_and_empties_the_failure_queue(
    stack: Stack, tmp_path: Path
) -> None:
    sessions = [completed_through_callbacks(stack, tmp_path) for _ in range(2)]
    wait_given_up(stack, RECORDS_PER_SESSION * len(sessions))
    assert stack.queue_depth("PublisherFailureQueueUrl") > 0
    for session in sessions:
        assert stack.events(session["session_id"], count=1, timeout=2) == [], "nothing reached the bus"

    dry_code, dry = stack.cli_json("redrive", "--dry-run")
    assert dry_code == 0, dry
    would = Counter(event["event_id"] for event in dry["events"])
    assert stack.queue_depth("PublisherFailureQueueUrl") == len(dry["messages"]), "a dry run deletes nothing"

    code, report = stack.cli_json("redrive")
    assert code == 0, report
    assert all(
        message["redriven"] and message["recovered_from"] == "stream" for message in report["messages"]
    )
    assert stack.queue_depth("PublisherFailureQueueUrl") == 0
    for session in sessions:
        expected = expected_events(session)
        delivered = stack.events(session["session_id"], count=sum(expected.values()), settle=1.0)
        got = Counter(
            (event["detail"]["event_id"], event["detail-type"], event["detail"].get("previous_status"))
            for event in delivered
        )
        assert got == expected, f"exactly the missing events, each once: {session['session_id']}"
        assert {eid for eid, _, _ in expected} <= set(would), "the dry run named the same events"

    empty_code, empty = stack.cli_json("redrive")
    assert (empty_code, empty["messages"]) == (0, []), "nothing left to redrive"


def test_a_message_that_is_no_stream_batch_is_reported_and_kept(stack: Stack) -> None:
    sqs = stack.aws("sqs")
    queue = stack.ready["outputs"]["PublisherFailureQueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody='{"requestContext": {}, "note": "not a batch"}')
    try:
        code, report = stack.cli_json("redrive")
        assert code == 1
        (message,) = report["messages"]
        assert message["redriven"] is False
        visible = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
        assert visible["Attributes"]["ApproximateNumberOfMessages"] == "1", "kept, and visible again at once"
    finally:
        sqs.purge_queue(QueueUrl=queue)
