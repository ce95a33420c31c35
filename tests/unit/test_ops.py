"""The recovery CLI's parts without I/O: its command line, what `status` says differs, `reconcile` as the
poller's decision over the in-memory store and the simulated Klarna, and how `redrive` reads Lambda's
on-failure records and the stream, and what it recovers when the stream no longer has the records."""

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from hpp_core.errors import DependencyError, UnknownSessionBudgetSpent
from hpp_core.http import error_response
from hpp_core.klarna import KlarnaAuthFailed, KlarnaClient
from hpp_core.models import KlarnaSession, StatusUpdate, TrackedSession
from hpp_core.poller import PollPolicy
from hpp_core.publishing import COMPLETED, STATUS_CHANGED, event_id
from hpp_core.timestamps import to_epoch_millis
from local.klarna_simulator import KlarnaSimulator
from local.template import load_template
from ops.check import _Failed as CheckFailed
from ops.check import forged_callback_verdict
from ops.cli import build_parser, duration, moment
from ops.redrive import FailedBatch, RecordsGone, Redrive, batch_records
from ops.sessions import differences_between, reconcile_sessions
from ops.target import REQUIRED_OUTPUTS, SETTINGS_OUTPUTS, Target, TargetError
from tests.support.memory_store import MemorySessionStore

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

# -- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90m", timedelta(minutes=90)), ("2h", timedelta(hours=2)), ("1d12h", timedelta(days=1, hours=12)),
     ("45s", timedelta(seconds=45)), ("1h30m", timedelta(minutes=90))],
)  # fmt: skip
def test_durations(text: str, expected: timedelta) -> None:
    assert duration(text) == expected


@pytest.mark.parametrize("text", ["", "0m", "2 hours", "h", "-1h", "1.5h", "2w"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_moments_are_iso_8601_now_or_how_long_ago() -> None:
    assert moment("2026-03-02T12:00:00Z") == NOW
    assert moment("2026-03-02T13:00:00+01:00") == NOW
    ago = moment("2h")
    assert timedelta(hours=2) - timedelta(seconds=5) < datetime.now(UTC) - ago < timedelta(hours=2, seconds=5)
    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        moment("yesterday")


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_every_command_takes_exactly_one_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse("check", "--stack", "hpp").stack == "hpp"
    assert parse("status", SID, "--local", "ready.json").local == Path("ready.json")
    for argv in (["check"], ["check", "--stack", "a", "--local", "b"]):
        with pytest.raises(SystemExit) as exit_:
            parse(*argv)
        assert exit_.value.code == 2
    assert "--stack" in capsys.readouterr().err


def test_reconcile_takes_ids_or_a_window_or_every_due_session_but_one_of_them() -> None:
    assert parse("reconcile", SID, "s2", "--stack", "x").session_ids == [SID, "s2"]
    assert parse("reconcile", "--active-since", "2h", "--stack", "x").active_since == timedelta(hours=2)
    assert parse("reconcile", "--all-due", "--stack", "x").all_due
    for argv in (["reconcile", "--stack", "x"], ["reconcile", SID, "--all-due", "--stack", "x"]):
        with pytest.raises(SystemExit):
            parse(*argv)


@pytest.mark.parametrize("hostile", ["../etc", "a b", "x" * 129, "id\n", ""])
def test_a_session_id_that_cannot_be_one_is_a_usage_error(hostile: str) -> None:
    with pytest.raises(SystemExit):
        parse("status", hostile, "--stack", "x")


def test_the_stack_has_every_output_the_cli_reads() -> None:
    assert set(load_template()["Outputs"]) >= REQUIRED_OUTPUTS


def ready_file(tmp_path: Path, outputs: dict[str, str]) -> Path:
    path = tmp_path / "ready.json"
    ready = {"aws_endpoint_url": "http://127.0.0.1:1", "dynamodb_endpoint_url": "http://127.0.0.1:2"}
    path.write_text(json.dumps({**ready, "region": "eu-west-1", "outputs": outputs}) + "\n")
    return path


def test_settings_come_from_the_outputs_and_a_bad_one_is_named(tmp_path: Path) -> None:
    outputs = {
        "SessionsTableName": "sessions",
        "StateTableName": "state",
        "PollShards": "16",
        "FirstPollDelaySeconds": "60",
        "SessionRetentionDays": "0",
        "KlarnaApiUrl": "https://api.klarna.com",
        "KlarnaCredentialsSecretArn": "arn:aws:secretsmanager:eu-west-1:1:secret:k",
        "PollerRatePerSecond": "7",
    }
    assert set(outputs) == set(SETTINGS_OUTPUTS.values())
    settings = Target.from_ready_file(ready_file(tmp_path, outputs)).settings()
    assert (settings.poll_shards, settings.session_retention_days, settings.poll_rate_per_second) == (
        16,
        0,
        7.0,
    )
    with pytest.raises(TargetError, match="POLL_SHARDS"):
        Target.from_ready_file(ready_file(tmp_path, {**outputs, "PollShards": "0"})).settings()
    with pytest.raises(TargetError, match="has no output SessionsTableName"):
        Target.from_ready_file(ready_file(tmp_path, {})).settings()


def test_a_ready_file_without_outputs_says_so(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"api_url": "http://127.0.0.1:3000/prod"}))
    with pytest.raises(TargetError, match="no outputs"):
        Target.from_ready_file(old)


# -- check ----------------------------------------------------------------------------------------


def answer_to(error: Exception) -> tuple[int, bytes]:
    """The callback route's answer to `error`, as the tracker's one error mapping makes it."""
    status, body, _ = error_response(error)
    return status, json.dumps(body).encode()


def test_check_takes_the_budgets_503_to_a_forged_callback_as_a_refusal_and_other_5xx_as_failures() -> None:
    assert "refused a forged callback (404)" in forged_callback_verdict(404, b"{}")
    spent = answer_to(UnknownSessionBudgetSpent("spent", retry_after_seconds=12))
    assert "unknown_session_budget_spent" in forged_callback_verdict(*spent)
    for status, body in [answer_to(DependencyError("DynamoDB is down")), (503, b"not json"), (502, b"")]:
        with pytest.raises(CheckFailed, match=f"answered {status}"):
            forged_callback_verdict(status, body)
    with pytest.raises(CheckFailed, match="ACCEPTED"):
        forged_callback_verdict(200, b"{}")
    # Klarna refusing the credentials: the route fails and says why.
    with pytest.raises(CheckFailed, match="answered 502 klarna_credentials_refused"):
        forged_callback_verdict(*answer_to(KlarnaAuthFailed("Klarna answered 401")))


# -- status ---------------------------------------------------------------------------------------


def tracked(status: str, updated_at: str, **fields: Any) -> TrackedSession:
    session = TrackedSession.model_validate(
        {"session_id": SID, "status": status, "updated_at": updated_at, **fields}
    )
    return session.model_copy(update={"updated_at_ms": to_epoch_millis(session.updated_at)})


def klarna_answer(status: str, updated_at: str, **fields: Any) -> KlarnaSession:
    return KlarnaSession.model_validate(
        {"session_id": SID, "status": status, "updated_at": updated_at, **fields}
    )


def test_status_names_what_differs_and_never_a_token() -> None:
    stored = tracked("IN_PROGRESS", "2026-03-02T12:00:00Z")
    answer = klarna_answer("COMPLETED", "2026-03-02T12:05:00Z", authorization_token=TOKEN)
    found = differences_between(stored, answer, {"found": True})
    assert found == [
        "status: stored IN_PROGRESS, Klarna COMPLETED",
        "updated_at: stored 2026-03-02T12:00:00.000Z, Klarna 2026-03-02T12:05:00.000Z",
        "authorization_token differs (values not shown)",
    ]
    assert TOKEN not in json.dumps(found)
    same = tracked("COMPLETED", "2026-03-02T12:05:00Z", authorization_token=TOKEN)
    assert differences_between(same, answer, {"found": True}) == []
    assert differences_between(None, answer, {"found": True}) == ["not tracked by the tracker"]
    assert differences_between(same, None, {"found": False}) == ["Klarna no longer knows the session"]
    assert differences_between(same, None, {"error": "Klarna read session failed"}) == [
        "unknown: Klarna could not be read"
    ]


# -- reconcile ------------------------------------------------------------------------------------


def lost_callbacks(simulator: KlarnaSimulator, store: MemorySessionStore, *ids: str) -> None:
    for session_id in ids:
        store.create_session(session_id, expires_at=None, session_url=None, callback_secret_hash=None)
        simulator.add_session(session_id, status="COMPLETED", authorization_token=TOKEN)


def test_reconcile_records_what_klarna_says_through_the_one_write_path(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = MemorySessionStore()
    lost_callbacks(simulator, store, "s1", "s2")
    due = [store.due_session("s1"), store.due_session("s2")]
    results = reconcile_sessions(due, store=store, klarna=klarna, policy=PollPolicy(), rate=100)  # type: ignore[arg-type]
    assert [(r.session_id, r.outcome, r.before, r.after) for r in results] == [
        ("s1", "changed", "WAITING", "COMPLETED"),
        ("s2", "changed", "WAITING", "COMPLETED"),
    ]
    assert [write.update.source for write in store.writes] == ["poller", "poller"]
    assert store.due_session("s1") is None, "final: out of the due index"


def test_reconcile_stops_reading_once_klarna_refuses_the_credentials(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = MemorySessionStore()
    lost_callbacks(simulator, store, "s1", "s2", "s3")
    simulator.fail_always("GET", "/hpp/v1/sessions", status=401)
    due = [store.due_session(session_id) for session_id in ("s1", "s2", "s3")]
    results = reconcile_sessions(due, store=store, klarna=klarna, policy=PollPolicy(), rate=100, workers=1)  # type: ignore[arg-type]
    assert [r.outcome for r in results] == ["auth_failed", "left_due", "left_due"]
    assert len(simulator.requests_to("GET")) == 1
    assert store.writes == []


# -- redrive --------------------------------------------------------------------------------------

BATCH_INFO = {
    "shardId": "shardId-0001",
    "startSequenceNumber": "200",
    "endSequenceNumber": "400",
    "streamArn": "arn:aws:dynamodb:eu-west-1:1:table/t/stream/2026",
    "batchSize": 3,
    "approximateArrivalOfFirstRecord": "2026-03-02T12:00:00.000Z",
    "approximateArrivalOfLastRecord": "2026-03-02T12:00:02.000Z",
}


def on_failure_message(**changes: Any) -> str:
    return json.dumps(
        {
            "requestContext": {"condition": "RetryAttemptsExhausted"},
            "DDBStreamBatchInfo": {**BATCH_INFO, **changes},
        }
    )


def test_lambdas_on_failure_record_is_read_and_anything_else_refused() -> None:
    batch = FailedBatch.from_message(on_failure_message())
    assert (batch.shard_id, batch.batch_size, batch.first_arrival) == ("shardId-0001", 3, NOW)
    assert batch.holds("200") and batch.holds("0400") and not batch.holds("199") and batch.passed("401")
    for body in ["not json", "{}", '{"DDBStreamBatchInfo": {"shardId": 1}}', on_failure_message(batchSize=0)]:
        with pytest.raises(ValueError):
            FailedBatch.from_message(body)


def stream_record(sequence_number: int, status: str = "IN_PROGRESS", **fields: str) -> dict[str, Any]:
    image = {"session_id": {"S": SID}, "status": {"S": status}, "updated_at": {"S": "2026-03-02T12:00:00Z"},
             "updated_at_ms": {"N": str(to_epoch_millis(NOW) + sequence_number)},
             **{name: {"S": value} for name, value in fields.items()}}  # fmt: skip
    return {
        "eventID": str(sequence_number),
        "eventName": "MODIFY",
        "dynamodb": {
            "ApproximateCreationDateTime": NOW,  # boto3 parses it into a datetime
            "Keys": {"session_id": {"S": SID}},
            "NewImage": image,
            "OldImage": {**image, "status": {"S": "WAITING"}},
            "SequenceNumber": str(sequence_number),
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


class FakeStreams:
    """GetShardIterator / GetRecords over pages of records; or the error a trimmed stream answers."""

    def __init__(self, pages: list[list[dict[str, Any]]], error: str | None = None) -> None:
        self.pages = pages
        self.error = error
        self.asked: list[dict[str, Any]] = []

    def get_shard_iterator(self, **request: Any) -> dict[str, Any]:
        self.asked.append(request)
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "trimmed"}}, "GetShardIterator")
        return {"ShardIterator": "0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        page = int(ShardIterator)
        following = str(page + 1) if page + 1 < len(self.pages) else None
        return {"Records": self.pages[page] if page < len(self.pages) else [], "NextShardIterator": following}


def test_the_batchs_records_are_read_back_from_its_first_to_its_last_sequence_number() -> None:
    streams = FakeStreams(
        [[stream_record(200)], [], [stream_record(300), stream_record(400)], [stream_record(500)]]
    )
    records = batch_records(streams, FailedBatch.from_message(on_failure_message()))
    assert [r["dynamodb"]["SequenceNumber"] for r in records] == ["200", "300", "400"]
    assert streams.asked == [
        {"StreamArn": BATCH_INFO["streamArn"], "ShardId": "shardId-0001",
         "ShardIteratorType": "AT_SEQUENCE_NUMBER", "SequenceNumber": "200"}
    ]  # fmt: skip
    # As Lambda delivered them: epoch seconds, and the stream's ARN.
    assert records[0]["dynamodb"]["ApproximateCreationDateTime"] == NOW.timestamp()
    assert records[0]["eventSourceARN"] == BATCH_INFO["streamArn"]


def test_reading_stops_past_the_last_sequence_number_or_when_the_shard_holds_no_more() -> None:
    passed = FakeStreams([[stream_record(200), stream_record(401), stream_record(300)]])
    assert [
        r["dynamodb"]["SequenceNumber"]
        for r in batch_records(passed, FailedBatch.from_message(on_failure_message()))
    ] == ["200"]
    quiet = FakeStreams([[stream_record(200)], *([[]] * 10), [stream_record(300)]])
    assert len(batch_records(quiet, FailedBatch.from_message(on_failure_message()))) == 1


@pytest.mark.parametrize("code", ["TrimmedDataAccessException", "ResourceNotFoundException"])
def test_records_no_longer_in_the_stream_are_said_to_be_gone(code: str) -> None:
    with pytest.raises(RecordsGone, match=code):
        batch_records(FakeStreams([], error=code), FailedBatch.from_message(on_failure_message()))


class FakeQueue:
    def __init__(self, bodies: list[str]) -> None:
        self.messages = {f"m{i}": body for i, body in enumerate(bodies)}
        self.received: set[str] = set()
        self.deleted: list[str] = []
        self.released: list[str] = []

    def receive_message(self, **_: Any) -> dict[str, Any]:
        fresh = [(mid, body) for mid, body in self.messages.items() if mid not in self.received]
        self.received |= {mid for mid, _ in fresh}
        return {"Messages": [{"MessageId": m, "ReceiptHandle": f"r-{m}", "Body": b} for m, b in fresh]}

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        self.deleted.append(ReceiptHandle)

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        self.released.append(ReceiptHandle)


class FakeBus:
    def __init__(self) -> None:
        self.put_events: list[Any] = []

    def put(self, events: list[Any]) -> list[None]:
        self.put_events += events
        return [None] * len(events)


class FakeTarget:
    """What `redrive` asks of its target: the queue, the stream, the table (in memory), the bus."""

    def __init__(self, queue: FakeQueue, streams: FakeStreams, store: MemorySessionStore) -> None:
        self.queue, self.streams, self.store, self.bus = queue, streams, store, FakeBus()

    def output(self, name: str) -> str:
        return f"output-{name}"

    def client(self, service: str) -> Any:
        return {"sqs": self.queue, "dynamodbstreams": self.streams}[service]

    def repository(self) -> MemorySessionStore:
        return self.store

    def event_bus(self) -> FakeBus:
        return self.bus


def completed_in_window(store: MemorySessionStore, session_id: str, recorded: datetime) -> None:
    store.clock = lambda: recorded
    update = {
        "session_id": session_id,
        "status": "COMPLETED",
        "updated_at": recorded,
        "authorization_token": TOKEN,
    }
    store.record_status(StatusUpdate.model_validate({"session": update, "source": "callback"}))


def test_trimmed_records_are_kept_unless_asked_to_scan_then_their_windows_sessions_are_republished() -> None:
    store = MemorySessionStore()
    completed_in_window(store, "in-window", NOW + timedelta(seconds=1))
    completed_in_window(store, "long-before", NOW - timedelta(hours=1))
    queue = FakeQueue([on_failure_message()])
    target = FakeTarget(queue, FakeStreams([], error="TrimmedDataAccessException"), store)

    kept = Redrive(target, dry_run=False, scan_trimmed=False).run()  # type: ignore[arg-type]
    assert not kept.ok and queue.deleted == [] and queue.released == ["r-m0"]
    assert "--scan-trimmed" in "\n".join(kept.lines)
    assert target.bus.put_events == []

    queue.received.clear()
    scanned = Redrive(target, dry_run=False, scan_trimmed=True).run()  # type: ignore[arg-type]
    assert scanned.ok and queue.deleted == ["r-m0"]
    assert scanned.data["messages"][0]["recovered_from"] == "table scan"
    published = [(event.session_id, event.detail_type) for event in target.bus.put_events]
    assert published == [("in-window", STATUS_CHANGED), ("in-window", COMPLETED)]
    done_ms = to_epoch_millis(NOW + timedelta(seconds=1))
    assert target.bus.put_events[1].event_id == event_id(COMPLETED, "in-window", "COMPLETED", done_ms)


def test_a_dry_run_publishes_nothing_and_leaves_every_message() -> None:
    queue = FakeQueue([on_failure_message(), "not a batch"])
    streams = FakeStreams([[stream_record(200), stream_record(300, "COMPLETED", authorization_token=TOKEN)]])
    target = FakeTarget(queue, streams, MemorySessionStore())
    report = Redrive(target, dry_run=True, scan_trimmed=False).run()  # type: ignore[arg-type]
    assert target.bus.put_events == [] and queue.deleted == []
    assert sorted(queue.released) == ["r-m0", "r-m1"]
    would = [(event["detail_type"], event["session_id"]) for event in report.data["events"]]
    assert would == [(STATUS_CHANGED, SID), (STATUS_CHANGED, SID), (COMPLETED, SID)]
    assert not report.ok, "the message that is no batch is reported"


def test_a_record_that_cannot_become_events_keeps_its_message_and_publishes_nothing_of_it() -> None:
    queue = FakeQueue([on_failure_message()])
    # COMPLETED without its token: the publisher refused it, and so does redrive.
    streams = FakeStreams([[stream_record(200), stream_record(300, "COMPLETED")]])
    target = FakeTarget(queue, streams, MemorySessionStore())
    report = Redrive(target, dry_run=False, scan_trimmed=False).run()  # type: ignore[arg-type]
    assert not report.ok and queue.deleted == [] and target.bus.put_events == []
    assert "neither" in report.data["messages"][0]["problem"]
