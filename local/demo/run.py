"""The demo's run: the local stack started from template.yaml, sessions created through the tracker's
`POST /sessions` and driven by the Klarna simulator's seeded consumers, progress shown until the tracker
holds a final status for every session (or the deadline passes); then the report (`local.demo.report`).
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import urllib3

from local.demo.report import COMPLETED_EVENT, build_report
from local.emulators.runtime import InvokeResult
from local.klarna_simulator import SimulatorConfig
from local.klarna_simulator.chaos import chaos_profile
from local.stack import LocalStack, StackOptions

CALLBACK_FUNCTION = "CallbackFunction"
POLLER_FUNCTION = "PollerFunction"
FINAL = frozenset({"COMPLETED", "CANCELLED", "DISABLED", "EXPIRED"})
STATUS_ORDER = ("WAITING", "IN_PROGRESS", "FAILED", "BACK", "ERROR", *sorted(FINAL))
KP_SESSION_URL = "https://api.playground.klarna.com/payments/v1/sessions/{id}"
# How the tracker is tuned so that a demo converges in about a minute instead of Klarna's 48 hours:
# polled 2 s after each change (then 4 s, 4 s ...), EXPIRED recorded 5 s after Klarna's expires_at.
DEMO_ENVIRONMENT = {
    "FIRST_POLL_DELAY_SECONDS": "2",
    "POLL_MAX_INTERVAL_SECONDS": "4",
    "EXPIRY_GRACE_SECONDS": "5",
    "POLL_TIME_MARGIN_SECONDS": "15",
    # DynamoDB Local on one busy machine can answer slower than the functions' budgets for AWS (the
    # callback's 0.3 s and one attempt; 1 s for the others): a create whose write timed out after it was
    # applied is answered 503 session_not_tracked. The demo's chaos is Klarna's, not the local engine's.
    "AWS_CALL_READ_TIMEOUT_SECONDS": "2",
    "AWS_CALL_ATTEMPTS": "3",
}


@dataclass
class DemoOptions:
    sessions: int = 300
    chaos: str = "default"
    seed: int = 7
    session_lifetime: float = 40.0
    deadline: float = 240.0  # seconds after the last session was created
    create_rate: float = 25.0  # POST /sessions per second (Klarna allows 40 creates a second)
    concurrency: int = 4
    poll_interval: float = 1.0
    port: int = 0
    log_file: Path | None = None
    progress_every: float = 5.0  # seconds between progress lines when stdout is not a terminal


@dataclass
class Tally:
    """What the functions answered, counted as the stack invokes them (thread safe)."""

    callbacks: Counter[str] = field(default_factory=Counter)
    poller: Counter[str] = field(default_factory=Counter)
    poll_runs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, function: str, source: str, result: InvokeResult) -> None:
        with self.lock:
            if function == CALLBACK_FUNCTION and source == "gateway":
                self.callbacks[_callback_outcome(result)] += 1
            elif function == POLLER_FUNCTION:
                self.poll_runs += 1
                if result.ok and isinstance(result.payload, dict):
                    for outcome, count in (result.payload.get("outcomes") or {}).items():
                        self.poller[str(outcome)] += int(count)
                else:
                    self.poller["run_failed"] += 1


def _callback_outcome(result: InvokeResult) -> str:
    if not result.ok or not isinstance(result.payload, dict):
        return "function_error"
    status = int(result.payload.get("statusCode", 0))
    if status == 200:  # noqa: PLR2004
        try:
            return str(json.loads(result.payload.get("body") or "{}").get("outcome", "ok"))
        except json.JSONDecodeError:
            return "ok"
    return {403: "refused", 400: "rejected", 404: "unknown_session"}.get(status, f"http_{status}")


class DemoStack(LocalStack):
    """The local stack, counting what the callback and poller functions answer."""

    def __init__(self, options: StackOptions) -> None:
        super().__init__(options)
        self.tally = Tally()

    def invoke(self, function: str, event: Any, *, source: str = "invoke") -> InvokeResult:
        result = super().invoke(function, event, source=source)
        self.tally.record(function, source, result)
        return result


class EventsCollector:
    """Drains the stack's events_queue (every event on the bus) in the background."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs, self._url = sqs, queue_url
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self._sqs.receive_message(
                    QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
            except Exception:  # the emulator may be stopping; try again until told to stop
                self._stop.wait(0.5)
                continue
            messages = answer.get("Messages", [])
            if not messages:
                continue
            with self._lock:
                self.events += [json.loads(message["Body"]) for message in messages]
            self._sqs.delete_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": message["ReceiptHandle"]}
                    for n, message in enumerate(messages)
                ],
            )


class Progress:
    """A progress bar with counts per status on a terminal; a line every few seconds otherwise."""

    def __init__(self, out: TextIO, total: int, every: float) -> None:
        self.out, self.total, self.every = out, total, every
        self.tty = out.isatty()
        self._last_line = 0.0

    def show(self, phase: str, created: int, statuses: Counter[str], elapsed: float) -> None:
        final = sum(count for status, count in statuses.items() if status in FINAL)
        width = 30
        filled = int(width * final / self.total) if self.total else width
        bar = "#" * filled + "-" * (width - filled)
        counts = " ".join(f"{status}={statuses[status]}" for status in STATUS_ORDER if statuses[status])
        line = f"[{bar}] {final}/{self.total} final  {elapsed:5.1f}s  {phase} created={created}  {counts}"
        if self.tty:
            self.out.write("\r\033[K" + line)
            self.out.flush()
        elif time.monotonic() - self._last_line >= self.every:
            self._last_line = time.monotonic()
            self.out.write(line + "\n")
            self.out.flush()

    def done(self) -> None:
        if self.tty:
            self.out.write("\n")
            self.out.flush()


# ------------------------------------------------------------------------------------------- run


@dataclass
class DemoResult:
    report: dict[str, Any]
    ok: bool


def stack_options(options: DemoOptions) -> StackOptions:
    simulator = SimulatorConfig(
        seed=options.seed,
        chaos=chaos_profile(options.chaos),
        session_lifetime=options.session_lifetime,
        think_time=(0.3, 2.0),
        callback_retry_delay=1.0,
    )
    return StackOptions(
        port=options.port,
        simulator=simulator,
        poll_interval=options.poll_interval,
        environment=dict(DEMO_ENVIRONMENT),
        concurrency=options.concurrency,
    )


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> DemoResult:
    """Start the stack, drive the sessions, stop the stack; the report and whether everything matched."""
    stack = DemoStack(stack_options(options))
    with stack:
        return _drive(stack, options, out)


@dataclass
class RunRecord:
    """What the demo did and saw while it ran (the report compares it with Klarna's truth)."""

    created: list[str] = field(default_factory=list)
    create_failures: Counter[str] = field(default_factory=Counter)
    merchant_deletes: Counter[str] = field(default_factory=Counter)
    create_seconds: float = 0.0
    converge_seconds: float | None = None


def _drive(stack: DemoStack, options: DemoOptions, out: TextIO) -> DemoResult:
    ready = stack.ready
    api_url, simulator = ready["api_url"], stack.simulator
    if simulator is None:
        raise RuntimeError("the demo needs the Klarna simulator")
    http = urllib3.PoolManager(maxsize=16, retries=False, timeout=urllib3.Timeout(total=30))
    record = RunRecord()

    def merchant_disable(session_id: str) -> None:
        # The merchant disables through the tracker's DELETE /sessions/{id}, which calls Klarna.
        response = http.request("DELETE", f"{api_url}/sessions/{session_id}")
        record.merchant_deletes[f"http_{response.status}"] += 1

    simulator.merchant_disable = merchant_disable
    events = EventsCollector(stack.client("sqs"), ready["events_queue_url"])
    events.start()
    dynamodb, table = stack.client("dynamodb"), ready["table_name"]
    progress = Progress(out, options.sessions, options.progress_every)
    started = time.monotonic()
    _create_sessions(
        http,
        api_url,
        options,
        record,
        lambda: progress.show("creating", len(record.created), Counter(), time.monotonic() - started),
    )
    record.create_seconds = time.monotonic() - started
    deadline = time.monotonic() + options.deadline
    while time.monotonic() < deadline:
        statuses = _tracker_statuses(dynamodb, table)
        counts = Counter(statuses.get(session_id, "MISSING") for session_id in record.created)
        progress.show("converging", len(record.created), counts, time.monotonic() - started)
        if record.created and all(statuses.get(session_id) in FINAL for session_id in record.created):
            record.converge_seconds = time.monotonic() - started
            break
        time.sleep(0.5)
    progress.done()
    # Late copies: callbacks still in Klarna's retry loop, events still in the pump. Wait for both.
    simulator.wait_settled(timeout=30)
    _wait_for_completed_events(events, dynamodb, table, record.created, timeout=30)
    time.sleep(2.0)
    events.stop()
    report = build_report(
        options, record, _tracker_items(dynamodb, table), simulator.truth(), events.snapshot(), stack.tally
    )
    return DemoResult(report, ok=report["ok"])


def _create_sessions(
    http: urllib3.PoolManager,
    api_url: str,
    options: DemoOptions,
    record: RunRecord,
    show_progress: Callable[[], None],
) -> None:
    """POST /sessions `options.sessions` times, paced under Klarna's create limit; 5xx/429 retried."""
    lock = threading.Lock()
    rng = random.Random(f"demo/{options.seed}")
    bodies = [
        {
            "payment_session_url": KP_SESSION_URL.format(id=uuid.UUID(int=rng.getrandbits(128))),
            "merchant_urls": {"success": "https://shop.example.com/ok?sid={{session_id}}"},
            "options": {"place_order_mode": rng.choices(("NONE", "PLACE_ORDER"), weights=(7, 3))[0]},
        }
        for _ in range(options.sessions)
    ]

    def create(body: dict[str, Any]) -> None:
        for _attempt in range(3):
            response = http.request(
                "POST",
                f"{api_url}/sessions",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with lock:
                if response.status == 201:  # noqa: PLR2004
                    record.created.append(response.json()["session_id"])
                    return
                record.create_failures[f"http_{response.status}"] += 1
            if response.status < 500 and response.status != 429:  # noqa: PLR2004
                return
            time.sleep(1.0)

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="demo-create") as pool:
        futures = []
        for number, body in enumerate(bodies):
            futures.append(pool.submit(create, body))
            time.sleep(1.0 / options.create_rate)
            if number % 10 == 0:
                show_progress()
        for future in futures:
            future.result()


def _tracker_statuses(dynamodb: Any, table: str) -> dict[str, str]:
    return {item["session_id"]: item["status"] for item in _scan(dynamodb, table, "session_id, #s")}


def _tracker_items(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    projection = "session_id, #s, authorization_token, order_id, klarna_reference"
    return {item["session_id"]: item for item in _scan(dynamodb, table, projection)}


def _scan(dynamodb: Any, table: str, projection: str) -> list[dict[str, str]]:
    items: list[dict[str, str]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": projection,
        "ExpressionAttributeNames": {"#s": "status"},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.scan(**kwargs)
        for raw in page.get("Items", []):
            items.append({name: value["S"] for name, value in raw.items() if "S" in value})
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _wait_for_completed_events(
    events: EventsCollector, dynamodb: Any, table: str, created: list[str], timeout: float
) -> None:
    statuses = _tracker_statuses(dynamodb, table)
    completed = {session_id for session_id in created if statuses.get(session_id) == "COMPLETED"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {
            event["detail"]["session_id"]
            for event in events.snapshot()
            if event.get("detail-type") == COMPLETED_EVENT
        }
        if completed <= seen:
            return
        time.sleep(0.5)
