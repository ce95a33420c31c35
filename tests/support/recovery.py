"""The recovery CLI's end-to-end tests share this: the local stack started in the test's process (its
ready file written as `--ready-file` writes it), `hpp-tracker` run as a user runs it (the console script in
.venv/bin), sessions created through the tracker's own sessions API with the SigV4 example client, and
the events the bus delivered, read from the stack's events queue."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import urllib3

from local.klarna_simulator import SimulatorConfig
from local.stack import LocalStack, StackOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
HPP_TRACKER = Path(sys.executable).with_name("hpp-tracker")
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=15))
KP_SESSION_URL = "https://api.playground.klarna.com/payments/v1/sessions/5a0b4c3e-2d1f-4e6a-9b8c-7d6e5f4a3b2c"


@dataclass
class Stack:
    local: LocalStack
    ready_file: Path
    # Every event the bus delivered to the events queue so far (bodies), read by `events`.
    delivered: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ready(self) -> dict[str, Any]:
        return self.local.ready

    def aws(self, service: str) -> Any:
        endpoint = self.ready["dynamodb_endpoint_url" if service == "dynamodb" else "aws_endpoint_url"]
        return boto3.client(service, endpoint_url=endpoint, region_name=self.ready["region"])  # type: ignore[call-overload]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`hpp-tracker ARGS... --local READY_FILE`, as a user runs it."""
        return subprocess.run(
            [str(HPP_TRACKER), *args, "--local", str(self.ready_file)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            cwd=REPO_ROOT,
        )

    def cli_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.cli(*args, "--json")
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)

    def create_session(self, tmp_path: Path) -> dict[str, Any]:
        """POST /sessions through the gateway, signed by examples/call_sessions_api.py (the local gateway
        takes any signature; on AWS the same request is IAM-authorized). Klarna's answer."""
        body = tmp_path / f"body-{time.monotonic_ns()}.json"
        body.write_text(json.dumps({"payment_session_url": KP_SESSION_URL}))
        done = subprocess.run(
            [
                sys.executable,
                "examples/call_sessions_api.py",
                "POST",
                self.ready["outputs"]["SessionsUrl"],
                str(body),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO_ROOT,
            env={**os.environ, "AWS_DEFAULT_REGION": self.ready["region"]},
        )
        status, _, answer = done.stdout.partition(" ")
        assert (done.returncode, status) == (0, "201"), done.stdout + done.stderr
        created: dict[str, Any] = json.loads(answer)
        return created

    def klarna_acts(self, session_id: str, status: str, *, callback: bool = True) -> dict[str, Any]:
        """The consumer moves the session at Klarna (the simulator); Klarna's callback unless `callback`."""
        answer = HTTP.request(
            "POST",
            f"{self.ready['klarna_url']}/_simulator/sessions/{session_id}/status",
            body=json.dumps({"status": status, "callback": callback}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status == 200, answer.data
        moved: dict[str, Any] = answer.json()
        return moved

    def truth(self, session_id: str) -> dict[str, Any]:
        truth: dict[str, Any] = HTTP.request(
            "GET", f"{self.ready['klarna_url']}/_simulator/truth/{session_id}"
        ).json()
        return truth

    def stored(self, session_id: str) -> dict[str, Any] | None:
        item = self.aws("dynamodb").get_item(
            TableName=self.ready["table_name"], Key={"session_id": {"S": session_id}}, ConsistentRead=True
        )
        return item.get("Item")

    def wait_stored(self, session_id: str, status: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.stored(session_id)
            if item is not None and item["status"]["S"] == status:
                return
            time.sleep(0.1)
        raise AssertionError(f"{session_id} never stored as {status}: {self.stored(session_id)}")

    def events(
        self, session_id: str, *, count: int, timeout: float = 20, settle: float = 0.0
    ) -> list[dict[str, Any]]:
        """The events delivered for `session_id`, once there are at least `count` (waiting `settle` seconds
        more for any beyond those); the queue is drained into `delivered`."""
        sqs = self.aws("sqs")
        deadline = time.monotonic() + timeout
        settled_at: float | None = None
        while time.monotonic() < deadline:
            messages = sqs.receive_message(
                QueueUrl=self.ready["events_queue_url"], MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            for message in messages:
                self.delivered.append(json.loads(message["Body"]))
                sqs.delete_message(
                    QueueUrl=self.ready["events_queue_url"], ReceiptHandle=message["ReceiptHandle"]
                )
            found = [event for event in self.delivered if event["detail"].get("session_id") == session_id]
            if len(found) >= count:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle:
                    return found
        return [event for event in self.delivered if event["detail"].get("session_id") == session_id]

    def queue_depth(self, output: str) -> int:
        attributes = self.aws("sqs").get_queue_attributes(
            QueueUrl=self.ready["outputs"][output],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())


@contextmanager
def local_stack(tmp_path: Path, **options: Any) -> Iterator[Stack]:
    """The local stack from template.yaml, manual journeys, its ready line in `tmp_path/ready.json`."""
    settings = StackOptions(
        port=0, simulator=SimulatorConfig(journeys="manual", callback_retry_delay=0.2), **options
    )
    with LocalStack(settings) as running:
        ready_file = tmp_path / "ready.json"
        ready_file.write_text(json.dumps(running.ready) + "\n")
        yield Stack(running, ready_file)
