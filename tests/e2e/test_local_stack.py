"""`python -m local.stack` on the real template.yaml, as a user runs it: the ready line, a Klarna callback
to a session's real status_update URL applied on DynamoDB Local, and nothing left running afterwards,
whenever it is stopped."""

import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
import pytest
import urllib3

from hpp_core.callback_secrets import hash_callback_secret, new_callback_secret, status_update_url
from hpp_core.repository import SessionRepository
from hpp_core.timestamps import parse_timestamp
from local.stack import READY_KEYS
from local.template import Template
from ops.target import REQUIRED_OUTPUTS
from tests.support.processes import alive, command_line, descendants, wait_gone

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=15))
KP_SESSION_URL = "https://api.playground.klarna.com/payments/v1/sessions/5a0b4c3e-2d1f-4e6a-9b8c-7d6e5f4a3b2c"


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    ready: dict[str, Any]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


def launch_stack(tmp_path: Path, *args: str) -> RunningStack:
    """`python -m local.stack --port 0 ARGS...`, its log in a file; `ready` is empty until it is read."""
    log = tmp_path / f"stack-{uuid.uuid4().hex[:6]}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "local.stack", "--port", "0", *args],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    return RunningStack(process, {}, log)


def start_stack(tmp_path: Path, *args: str) -> RunningStack:
    stack = launch_stack(tmp_path, *args)
    assert stack.process.stdout is not None
    line = _read_line(stack.process.stdout, timeout=90)
    if not line:
        stack.process.kill()
        raise AssertionError(f"no ready line; exit code {stack.process.poll()}\n{stack.log_tail()}")
    stack.ready = json.loads(line)
    return stack


def _read_line(stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def stop_stack(stack: RunningStack, sig: int = signal.SIGTERM) -> int:
    if stack.process.poll() is None:
        stack.process.send_signal(sig)
    try:
        return stack.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        raise


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def stack(stack_dir: Path) -> Iterator[RunningStack]:
    running = start_stack(
        stack_dir,
        "--ready-file",
        str(stack_dir / "ready.json"),
        "--journeys",
        "manual",
        "--callback-retry-delay",
        "0.2",
        "--poll-interval",
        "60",
    )
    yield running
    stop_stack(running)


def dynamodb(stack: RunningStack) -> Any:
    return boto3.client("dynamodb", endpoint_url=stack.ready["dynamodb_endpoint_url"])


def klarna(stack: RunningStack, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers.update(urllib3.make_headers(basic_auth="PK_simulator_merchant:simulator-password"))
    data = json.dumps(body).encode() if body is not None else None
    return HTTP.request(method, stack.ready["klarna_url"] + path, body=data, headers=headers)


def tracked_session(stack: RunningStack) -> tuple[str, str, SessionRepository]:
    """A Klarna session whose status_update is the tracker's callback URL, tracked as POST /sessions would."""
    secret = new_callback_secret()
    callback_url = status_update_url(f"{stack.ready['api_url']}/callbacks/hpp", secret)
    created = klarna(
        stack,
        "POST",
        "/hpp/v1/sessions",
        {"payment_session_url": KP_SESSION_URL, "merchant_urls": {"status_update": callback_url}},
    ).json()
    repository = SessionRepository(stack.ready["table_name"], dynamodb(stack))
    repository.create_session(
        created["session_id"],
        expires_at=parse_timestamp(created["expires_at"]),
        session_url=created["session_url"],
        callback_secret_hash=hash_callback_secret(secret),
    )
    return created["session_id"], secret, repository


def wait_for_status(repository: SessionRepository, session_id: str, status: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = repository.get_item(session_id)
        if item is not None and item["status"] == status:
            return item
        time.sleep(0.1)
    raise AssertionError(f"{session_id} never reached {status}: {repository.get_item(session_id)}")


def test_the_ready_line_names_every_local_endpoint(stack: RunningStack) -> None:
    ready = stack.ready
    template = Template.load()
    assert list(ready) == list(READY_KEYS)
    assert ready["api_url"].startswith("http://127.0.0.1:") and ready["api_url"].endswith("/prod")
    for key in ("aws_endpoint_url", "dynamodb_endpoint_url", "klarna_url"):
        assert ready[key].startswith("http://127.0.0.1:")
    table = dynamodb(stack).describe_table(TableName=ready["table_name"])["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    # Keys for resources the template does not have yet (the bus arrives with the publisher) are null.
    has_bus = bool(template.of_type("AWS::Events::EventBus"))
    assert (ready["event_bus_name"] is not None) == has_bus
    assert (ready["events_queue_url"] is not None) == has_bus


def test_the_ready_file_holds_the_ready_line_with_every_output_of_the_template(
    stack: RunningStack, stack_dir: Path
) -> None:
    assert json.loads((stack_dir / "ready.json").read_text()) == stack.ready
    ready, outputs = stack.ready, stack.ready["outputs"]
    declared = Template.load().document["Outputs"]
    assert REQUIRED_OUTPUTS <= set(outputs) <= set(declared), "every output the recovery CLI reads"
    for name in set(declared) - set(outputs):
        # Left out: an attribute of a resource the stack does not run (its placeholder has only an Arn).
        value = declared[name]["Value"]
        assert "Fn::GetAtt" in value and value["Fn::GetAtt"][1] != "Arn", (name, value)
    assert outputs["CallbackUrl"] == f"{ready['api_url']}/callbacks/hpp"
    assert outputs["SessionsUrl"] == f"{ready['api_url']}/sessions"
    assert (outputs["SessionsTableName"], outputs["EventBusName"]) == (
        ready["table_name"],
        ready["event_bus_name"],
    )
    assert outputs["KlarnaApiUrl"] == ready["klarna_url"]
    # They name the local resources: what `hpp-tracker --local` reaches with them.
    local = {"endpoint_url": ready["aws_endpoint_url"], "region_name": ready["region"]}
    stream = dynamodb(stack).describe_table(TableName=outputs["SessionsTableName"])["Table"][
        "LatestStreamArn"
    ]
    assert outputs["SessionsTableStreamArn"] == stream
    dynamodb(stack).describe_table(TableName=outputs["StateTableName"])
    boto3.client("sqs", **local).get_queue_attributes(QueueUrl=outputs["PublisherFailureQueueUrl"])
    boto3.client("events", **local).describe_archive(ArchiveName=outputs["EventArchiveName"])
    secret = boto3.client("secretsmanager", **local).get_secret_value(
        SecretId=outputs["KlarnaCredentialsSecretArn"]
    )
    assert set(json.loads(secret["SecretString"])) == {"username", "password"}


def test_a_klarna_callback_to_the_sessions_status_update_url_is_applied(stack: RunningStack) -> None:
    session_id, _, repository = tracked_session(stack)

    moved = klarna(
        stack, "POST", f"/_simulator/sessions/{session_id}/status", {"status": "IN_PROGRESS"}, auth=False
    )
    assert moved.status == 200

    item = wait_for_status(repository, session_id, "IN_PROGRESS")
    assert item["last_source"] == "callback"
    assert item["updated_at"] == moved.json()["updated_at"]


def test_an_empty_callback_is_settled_by_reading_klarna_with_the_credentials_from_secrets_manager(
    stack: RunningStack,
) -> None:
    session_id, _, repository = tracked_session(stack)
    assert (
        klarna(stack, "POST", "/_simulator/chaos", {"set": {"callback_empty_rate": "1"}}, auth=False).status
        == 200
    )
    try:
        klarna(
            stack, "POST", f"/_simulator/sessions/{session_id}/status", {"status": "COMPLETED"}, auth=False
        )
        item = wait_for_status(repository, session_id, "COMPLETED")
    finally:
        klarna(stack, "POST", "/_simulator/chaos", {"profile": "none"}, auth=False)

    truth = klarna(stack, "GET", f"/_simulator/truth/{session_id}", auth=False).json()
    assert item["last_source"] == "klarna_read"
    assert item["authorization_token"] == truth["authorization_token"]
    assert truth["callbacks"][0]["chaos"] == ["emptied"]


def test_a_callback_with_an_altered_secret_is_refused_and_changes_nothing(stack: RunningStack) -> None:
    session_id, secret, repository = tracked_session(stack)
    body = {
        "event_id": str(uuid.uuid4()),
        "session": {
            "session_id": session_id,
            "status": "COMPLETED",
            "updated_at": "2099-01-01T00:00:00.000Z",
            "authorization_token": "forged",
        },
    }
    altered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    response = HTTP.request(
        "POST",
        f"{stack.ready['api_url']}/callbacks/hpp?session_id={session_id}&secret={altered}",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 403
    item = repository.get_item(session_id)
    assert item is not None and item["status"] == "WAITING" and "authorization_token" not in item


def _children_of(stack: RunningStack) -> set[int]:
    children = descendants(stack.process.pid)
    names = " ".join(command_line(pid) for pid in children)
    assert "DynamoDBLocal.jar" in names and "moto.server" in names and "lambda_worker.py" in names, names
    return children


# When a signal reaches the stack: a while after it was launched (before or just after it installs its
# handlers), or a while after a line of its log. Each case waits a random fraction of a second more.
STOP_MOMENTS = [
    pytest.param(None, signal.SIGINT, id="importing-SIGINT"),
    pytest.param("moto on", signal.SIGTERM, id="emulators-up-SIGTERM"),
    pytest.param("table ", signal.SIGINT, id="provisioning-SIGINT"),
    pytest.param("instance 1 ready", signal.SIGTERM, id="cold-starts-SIGTERM"),
    pytest.param("ready; Ctrl-C", signal.SIGINT, id="ready-SIGINT"),
    pytest.param("ready; Ctrl-C", signal.SIGTERM, id="ready-SIGTERM"),
]
STOP_WITHIN_SECONDS = 5.0  # the local stack's promise: stopped within 5 s of SIGTERM or Ctrl-C


@pytest.mark.parametrize(("after_line", "sig"), STOP_MOMENTS)
def test_a_signal_at_any_moment_stops_everything_within_five_seconds(
    tmp_path: Path, after_line: str | None, sig: signal.Signals
) -> None:
    delay = random.uniform(0.0, 0.5)
    ready_file = tmp_path / "ready.json"
    stack = launch_stack(tmp_path, "--journeys", "manual", "--ready-file", str(ready_file))
    seen = _wait_for_line(stack, after_line, timeout=120)
    time.sleep(delay)

    seen |= descendants(stack.process.pid)
    signalled = time.monotonic()
    stack.process.send_signal(sig)
    while stack.process.poll() is None and time.monotonic() - signalled < 30:
        seen |= descendants(stack.process.pid)  # anything started after the signal counts too
        time.sleep(0.05)
    took = time.monotonic() - signalled

    left = wait_gone(seen, timeout=2)
    for pid in left:  # do not leak them into the rest of the run
        os.kill(pid, signal.SIGKILL)
    where = f"{sig.name} {delay:.2f} s after {after_line or 'launch'!r}\n{stack.log_tail()}"
    if stack.process.poll() is None:
        stack.process.kill()
        raise AssertionError(f"still running 30 s after {where}")
    assert took <= STOP_WITHIN_SECONDS, f"exited {took:.1f} s after {where}"
    assert left == set(), ([command_line(pid) for pid in left], where)
    assert not ready_file.exists(), f"a stopped stack leaves no ready file ({where})"
    if after_line is None:  # maybe before its handlers were installed: then the signal's default action
        # (SIGINT while the interpreter itself still starts: Python's own KeyboardInterrupt, exit 1)
        tail = stack.log_tail()
        interpreter_start = "Fatal Python error" in tail and "KeyboardInterrupt" in tail
        assert stack.process.returncode in (0, -sig) or (sig == signal.SIGINT and interpreter_start), where
    else:
        assert stack.process.returncode == 0, where
        assert "stopped" in stack.log_tail() and "Traceback" not in stack.log_tail(), where


def _wait_for_line(stack: RunningStack, text: str | None, timeout: float) -> set[int]:
    """Wait until the stack's log has a line containing `text` (None: do not wait); the processes seen."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while text is not None and text not in stack.log.read_text(errors="replace"):
        assert stack.process.poll() is None, f"exited before {text!r}\n{stack.log_tail()}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout:.0f} s\n{stack.log_tail()}"
        seen |= descendants(stack.process.pid)
        time.sleep(0.05)
    return seen


def test_even_a_killed_stack_leaves_no_java_moto_or_function_process(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, "--journeys", "manual")
    children = _children_of(stack)

    stop_stack(stack, signal.SIGKILL)  # no chance to clean up: the kernel and closed pipes must do it

    left = wait_gone(children, timeout=15)
    for pid in left:  # do not leak them into the rest of the run
        os.kill(pid, signal.SIGKILL)
    assert left == set(), [command_line(pid) for pid in left if alive(pid)]


def test_a_stack_that_cannot_start_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "local.stack", "--port", str(port)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""  # no ready line
    assert "the local stack did not start" in result.stderr and "Address already in use" in result.stderr
    # The emulators had started (the gateway comes later): the log names them, and they are gone.
    started = {int(pid) for pid in re.findall(r"\(pid (\d+)\)", result.stderr)}
    assert len(started) == 2, result.stderr
    assert wait_gone(started, timeout=10) == set()
