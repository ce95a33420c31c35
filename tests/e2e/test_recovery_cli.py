"""`hpp-tracker` on the local stack, as an operator runs it (`--local READY_FILE`): a session whose callbacks
were all lost is COMPLETED by `reconcile` at once and its events reach consumers; `republish` puts the
same event ids on the bus again; `replay` replays the archive; `check` passes on a healthy stack and fails
naming the part when the secret holds the wrong keys.

One stack for the module, on one xdist worker (its poller runs every 5 seconds, so `check` sees it run; a
session the tracker creates is first polled 60 seconds later, after these tests have settled it
themselves). Each test gets the sessions it needs from fixtures, whatever order the tests run in.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpp_core.publishing import COMPLETED, STATUS_CHANGED, event_id
from hpp_core.timestamps import parse_timestamp, to_epoch_millis
from tests.support.recovery import Stack, local_stack

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("recovery-cli")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with local_stack(tmp_path_factory.mktemp("recovery"), poll_interval=5.0) as running:
        yield running


def lost_session(stack: Stack, tmp_path: Path) -> dict[str, Any]:
    """A session created through the tracker, completed at Klarna with every callback lost: the table
    still says WAITING."""
    created = stack.create_session(tmp_path)
    session_id = created["session_id"]
    stack.events(session_id, count=1)  # its WAITING, published when it was stored
    completed = stack.klarna_acts(session_id, "COMPLETED", callback=False)
    stored = stack.stored(session_id)
    assert stored is not None and stored["status"]["S"] == "WAITING"
    return {"session_id": session_id, "completed": completed}


@pytest.fixture
def lost(stack: Stack, tmp_path: Path) -> dict[str, Any]:
    return lost_session(stack, tmp_path)


@pytest.fixture(scope="module")
def reconciled(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A lost session, after `hpp-tracker reconcile ID`: its outcome, and the events the bus delivered."""
    session = lost_session(stack, tmp_path_factory.mktemp("lost"))
    done = stack.cli("reconcile", session["session_id"])
    events = stack.events(session["session_id"], count=3, settle=0.5)
    return {**session, "done": done, "events": events}


def test_status_shows_the_row_beside_klarna_and_what_differs(stack: Stack, lost: dict[str, Any]) -> None:
    code, report = stack.cli_json("status", lost["session_id"])
    assert code == 0, report
    assert report["stored"]["status"] == "WAITING"
    assert report["klarna"]["status"] == "COMPLETED"
    assert report["klarna"]["authorization_token"] == "**********", "the token is masked"
    assert any(line.startswith("status: stored WAITING, Klarna COMPLETED") for line in report["differences"])
    assert lost["completed"]["authorization_token"] not in json.dumps(report)


def test_reconcile_completes_a_session_whose_callbacks_were_all_lost_and_consumers_get_it(
    stack: Stack, reconciled: dict[str, Any]
) -> None:
    session_id, done = reconciled["session_id"], reconciled["done"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{session_id}  changed       WAITING -> COMPLETED" in done.stdout

    stored = stack.stored(session_id)
    assert stored is not None and stored["status"]["S"] == "COMPLETED"
    assert stored["authorization_token"]["S"] == stack.truth(session_id)["authorization_token"]
    (completed,) = [event for event in reconciled["events"] if event["detail-type"] == COMPLETED]
    assert completed["detail"]["authorization_token"] == stack.truth(session_id)["authorization_token"]
    changed_ms = to_epoch_millis(parse_timestamp(reconciled["completed"]["updated_at"]))
    assert completed["detail"]["event_id"] == event_id(COMPLETED, session_id, "COMPLETED", changed_ms)

    again = stack.cli("reconcile", session_id)
    assert again.returncode == 0 and "already_final" in again.stdout, "final is final: nothing to read"


def test_republish_puts_the_same_event_ids_on_the_bus_again(stack: Stack, reconciled: dict[str, Any]) -> None:
    session_id = reconciled["session_id"]
    first = stack.events(session_id, count=len(reconciled["events"]))
    published = {event["detail"]["event_id"] for event in first if event["detail"]["status"] == "COMPLETED"}
    assert len(published) == 2  # Status Changed into COMPLETED, and Completed

    code, report = stack.cli_json("republish", session_id)
    assert code == 0, report
    assert {event["event_id"] for event in report["events"]} == published
    again = stack.events(session_id, count=len(first) + 2, settle=0.5)[len(first) :]
    assert sorted(event["detail"]["event_id"] for event in again) == sorted(published)
    assert {event["detail-type"] for event in again} == {STATUS_CHANGED, COMPLETED}


def test_republish_of_a_session_the_tracker_does_not_have_says_so(stack: Stack) -> None:
    done = stack.cli("republish", "not-a-tracked-session")
    assert done.returncode == 1
    assert "not-a-tracked-session  not tracked" in done.stdout


def test_replay_replays_the_archive_onto_the_bus_and_waits_for_it(
    stack: Stack, reconciled: dict[str, Any]
) -> None:
    """moto replays every archived event whatever the window and cannot filter by rule (it has no
    TestEventPattern either): what runs here is the replay's start, its wait, and the events coming back
    marked as replayed with their ids. The time window is EventBridge's to honour."""
    session_id = reconciled["session_id"]
    before = stack.events(session_id, count=len(reconciled["events"]), settle=0.5)
    archived = {event["detail"]["event_id"] for event in before}
    code, report = stack.cli_json("replay", "--from", "1h", "--to", "now")
    assert code == 0, report
    assert report["state"] == "COMPLETED"
    replayed = stack.events(session_id, count=len(before) + 1, settle=1.0)[len(before) :]
    assert replayed and all(event.get("replay-name") == report["replay_name"] for event in replayed)
    assert {event["detail"]["event_id"] for event in replayed} <= archived


def test_replay_refuses_a_window_that_ends_before_it_starts(stack: Stack) -> None:
    done = stack.cli("replay", "--from", "now", "--to", "1h")
    assert done.returncode == 2
    assert "--to must be after --from" in done.stderr


def wait_for_check(stack: Stack) -> tuple[int, dict[str, Any]]:
    """`check`, again until the poller's first run has reached CloudWatch (it runs every 5 seconds)."""
    for _ in range(10):
        code, report = stack.cli_json("check")
        if "poller" not in report["failed"]:
            return code, report
    return code, report


def test_check_passes_on_a_healthy_stack(stack: Stack) -> None:
    code, report = wait_for_check(stack)
    assert (code, report["failed"]) == (0, []), report
    names = [part["name"] for part in report["parts"]]
    assert names == [
        "secret",
        "klarna-credentials",
        "callback-route",
        "sessions-table",
        "due-index",
        "stream",
        "state-table",
        "event-bus",
        "archive",
        "poller",
        "publisher-failure-queue",
        "poller-dead-letter-queue",
    ]
    route = next(part for part in report["parts"] if part["name"] == "callback-route")
    assert "refused a forged callback (404)" in route["detail"]


def test_check_fails_naming_the_secret_when_it_holds_the_wrong_keys(stack: Stack) -> None:
    secrets = stack.aws("secretsmanager")
    arn = stack.ready["outputs"]["KlarnaCredentialsSecretArn"]
    right = secrets.get_secret_value(SecretId=arn)["SecretString"]
    secrets.put_secret_value(
        SecretId=arn, SecretString=json.dumps({"user": "PK_simulator_merchant", "pass": "x"})
    )
    try:
        done = stack.cli("check")
    finally:
        secrets.put_secret_value(SecretId=arn, SecretString=right)
    assert done.returncode == 1
    assert "FAIL  secret" in done.stdout and "username: Field required" in done.stdout
    assert "FAIL  klarna-credentials        not checked" in done.stdout
    # The callback function keeps its own copy of the secret for CREDENTIALS_CACHE_SECONDS: the route
    # still refuses the forged callback while that copy is good, and fails naming Klarna's refusal once
    # it has read the wrong keys. Either way nothing else fails.
    summary = done.stdout.rstrip().splitlines()[-1]
    route = next(line for line in done.stdout.splitlines() if "callback-route" in line)
    if route.startswith("FAIL"):
        assert "answered 502 klarna_credentials_refused" in route, route
        assert summary == "check failed: secret, klarna-credentials, callback-route"
    else:
        assert "refused a forged callback (404)" in route, route
        assert summary == "check failed: secret, klarna-credentials"


def test_check_fails_naming_a_queue_that_holds_messages(stack: Stack) -> None:
    sqs = stack.aws("sqs")
    queue = stack.ready["outputs"]["PollerDeadLetterQueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"requestContext": {"condition": "test"}}))
    try:
        code, report = stack.cli_json("check")
    finally:
        sqs.purge_queue(QueueUrl=queue)
    assert code == 1
    assert "poller-dead-letter-queue" in report["failed"]
    assert "publisher-failure-queue" not in report["failed"]


def test_a_ready_file_that_is_not_one_is_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    stale = Stack(stack.local, tmp_path / "missing.json")
    done = stale.cli("check")
    assert done.returncode == 1
    assert "not a local stack's ready line" in done.stdout
