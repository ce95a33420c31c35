"""Run a function the way Lambda does: each warm instance its own process with its own environment.

Why processes and not imports into the stack's process: the functions share module-level state that reads
the environment (hpp_core's settings cache is keyed by settings class, so two functions with different
environments would get the first one's; Powertools' Metrics share one metric set per process; boto3
clients and Powertools providers read AWS_* variables when first used, not only at import). Setting and
restoring os.environ around an import cannot isolate that. A process per instance can, and also gives what
Lambda gives: the function's code directory and layers on sys.path and nothing else of this repository,
a timeout that really stops the invocation (the instance is killed, as Lambda does), a crash that takes
down one instance only, and instances that run in parallel on more than one core.

Instances start on demand up to `max_concurrency` (the first at start-up, so a broken environment fails
the stack at once with the function's own error) and stay warm.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import IO, Any

from local.common.lifecycle import ChildProcesses, ProcessesClosed, stop_processes

WORKER_SCRIPT = Path(__file__).resolve().with_name("lambda_worker.py")
_INIT_TIMEOUT = 30.0  # Lambda allows 10 s of init; a cold Python with boto3 on a busy laptop needs more
_log = logging.getLogger("local.emulators.runtime")


class FunctionInitError(RuntimeError):
    """The function's module could not be imported with its environment."""


@dataclass(frozen=True)
class FunctionConfig:
    logical_id: str
    function_name: str
    arn: str
    handler: str
    code_dir: Path
    environment: dict[str, str]  # the process's environment, apart from what the Lambda runtime sets
    timeout: float
    max_concurrency: int = 2
    memory_size: int = 128
    log_group: str = ""
    runtime: str = "python3.13"

    def process_environment(self) -> dict[str, str]:
        """`environment` plus the variables Lambda's runtime sets (and does not let a template change)."""
        return {
            **self.environment,
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": self.log_group or f"/aws/lambda/{self.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{self.runtime}",
            "LAMBDA_TASK_ROOT": str(self.code_dir),
            "_HANDLER": self.handler,
        }


@dataclass(frozen=True)
class InvokeResult:
    request_id: str
    ok: bool
    payload: Any = None  # the handler's return value when ok
    error: dict[str, Any] | None = None  # errorType, errorMessage, stackTrace
    duration_ms: int = 0

    @property
    def error_summary(self) -> str:
        if self.error is None:
            return ""
        return f"{self.error.get('errorType')}: {self.error.get('errorMessage')}"


@dataclass
class RuntimeStats:
    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    cold_starts: int = 0


class _WorkerDied(Exception):
    """The instance's process went away."""


@dataclass(eq=False)  # compared and hashed by identity: the pool keeps them in a set
class _Worker:
    number: int
    process: subprocess.Popen[bytes]
    connection: Connection  # invocations out, answers back, one JSON message each
    relays: list[threading.Thread] = field(default_factory=list)

    def send(self, message: Any) -> None:
        try:
            self.connection.send_bytes(json.dumps(message).encode())
        except OSError:
            raise _WorkerDied from None

    def receive(self, deadline: float) -> Any:
        """The next message; TimeoutError past `deadline`; _WorkerDied if the process went away."""
        try:
            answered = self.connection.poll(max(0.0, deadline - time.monotonic()))
            message = self.connection.recv_bytes() if answered else None
        except (EOFError, OSError):
            raise _WorkerDied from None
        if message is None:
            raise TimeoutError
        return json.loads(message)

    def close(self, grace: float = 2.0) -> None:
        """End of input lets the worker exit by itself; one that does not is killed."""
        self.connection.close()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.join_relays()

    def join_relays(self) -> None:
        for relay in self.relays:
            relay.join(timeout=2)


class FunctionRuntime:
    def __init__(
        self,
        config: FunctionConfig,
        *,
        python: str = sys.executable,
        processes: ChildProcesses | None = None,
        on_log_line: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        # Every line the function writes, as Lambda's log ingestion sees it (EMF lines become metrics).
        self._on_log_line = on_log_line
        self.stats = RuntimeStats()
        self._python = python
        self._processes = processes or ChildProcesses()
        self._log = logging.getLogger(f"local.fn.{config.logical_id}")
        self._condition = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = 0
        self._numbers = 0
        self._stopping = False

    @property
    def name(self) -> str:
        return self.config.logical_id

    def start(self) -> None:
        """Start the first instance (the function's cold start); FunctionInitError if it cannot import."""
        self._add(self._spawn(), idle=True)

    def stop(self, timeout: float = 2.0) -> None:
        """End every instance at once; an invocation in flight ends with it, as on Lambda."""
        with self._condition:
            self._stopping = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._condition.notify_all()
        for worker in workers:
            worker.connection.close()
        stop_processes([worker.process for worker in workers], timeout)
        for worker in workers:
            worker.join_relays()

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pids(self) -> list[int]:
        with self._condition:
            return [worker.process.pid for worker in self._all]

    def invoke(self, event: Any, *, source: str = "invoke") -> InvokeResult:
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        try:
            worker = self._acquire(started + self.config.timeout)
        except TimeoutError:
            return self._finish(
                request_id,
                started,
                source,
                error=lambda_error(
                    "TooManyRequestsException", f"all {self.config.max_concurrency} instances stayed busy"
                ),
            )
        except FunctionInitError as error:
            return self._finish(
                request_id, started, source, error=lambda_error("Runtime.InitError", str(error))
            )
        invocation = {
            "event": event,
            "request_id": request_id,
            "invoked_function_arn": self.config.arn,
            "timeout_seconds": self.config.timeout,
        }
        try:
            worker.send(invocation)
            # A little grace on top of the timeout: the handler's own deadline check should win the race.
            answer = worker.receive(started + self.config.timeout + 0.25)
        except TimeoutError:
            self._discard(worker, kill=True)
            self.stats.timeouts += 1
            message = f"Task timed out after {self.config.timeout:.2f} seconds"
            return self._finish(request_id, started, source, error=lambda_error("Sandbox.Timedout", message))
        except _WorkerDied:
            self._discard(worker, kill=True)
            code = worker.process.poll()
            message = f"the instance exited (code {code}) during the invocation"
            return self._finish(request_id, started, source, error=lambda_error("Runtime.ExitError", message))
        self._release(worker)
        if answer.get("ok"):
            return self._finish(request_id, started, source, payload=answer.get("result"))
        return self._finish(request_id, started, source, error=answer.get("error"))

    # -- pool ------------------------------------------------------------------------------------

    def _acquire(self, deadline: float) -> _Worker:
        with self._condition:
            while True:
                if self._stopping:
                    raise FunctionInitError(f"{self.name} is stopping")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) + self._starting < self.config.max_concurrency:
                    self._starting += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self._condition.wait(remaining)
        try:
            worker = self._spawn()
        finally:
            with self._condition:
                self._starting -= 1
        return self._add(worker, idle=False)

    def _add(self, worker: _Worker, *, idle: bool) -> _Worker:
        """Put a new instance in the pool; one that started while the pool was stopping is closed."""
        with self._condition:
            stopped_meanwhile = self._stopping
            if not stopped_meanwhile:
                self._all.add(worker)
                if idle:
                    self._idle.append(worker)
        if stopped_meanwhile:
            worker.close()
            raise FunctionInitError(f"{self.name} is stopping")
        return worker

    def _release(self, worker: _Worker) -> None:
        with self._condition:
            if worker in self._all:
                self._idle.append(worker)
                self._condition.notify()

    def _discard(self, worker: _Worker, *, kill: bool) -> None:
        with self._condition:
            self._all.discard(worker)
            self._condition.notify()
        if kill and worker.process.poll() is None:
            worker.process.kill()
        worker.close(grace=1.0)

    def _spawn(self) -> _Worker:
        with self._condition:
            self._numbers += 1
            number = self._numbers
        connection, worker_end = Pipe()
        started = time.monotonic()
        try:
            process = self._processes.spawn(
                # -P: the worker script's directory (local/emulators/) is not put on sys.path; the function
                # sees only its code directory and layers (PYTHONPATH) and the interpreter's site-packages.
                [self._python, "-P", str(WORKER_SCRIPT), self.config.handler, str(worker_end.fileno())],
                cwd=self.config.code_dir,
                env=self.config.process_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(worker_end.fileno(),),
            )
        except ProcessesClosed:
            raise FunctionInitError(f"{self.name} is stopping") from None
        finally:
            worker_end.close()
        worker = _Worker(number, process, connection)
        assert process.stdout is not None and process.stderr is not None  # noqa: S101 - PIPE was asked for
        for stream in (process.stdout, process.stderr):
            relay = threading.Thread(
                target=self._relay, args=(stream, number), name=f"{self.name}-{number}-log", daemon=True
            )
            relay.start()
            worker.relays.append(relay)
        return self._wait_ready(worker, started)

    def _wait_ready(self, worker: _Worker, started: float) -> _Worker:
        """The worker once its handler is imported; FunctionInitError (and no process) if it cannot be."""
        try:
            ready = worker.receive(started + _INIT_TIMEOUT)
        except (TimeoutError, _WorkerDied):
            worker.close(grace=0.5)
            raise FunctionInitError(
                f"{self.name}: the instance did not start (exit code {worker.process.poll()}); see its log"
                " above"
            ) from None
        if not ready.get("ready"):
            worker.close()
            error = ready.get("error") or {}
            raise FunctionInitError(f"{self.name}: {error.get('errorType')}: {error.get('errorMessage')}")
        self.stats.cold_starts += 1
        self._log.info(
            "instance %d ready (cold start %d ms)", worker.number, (time.monotonic() - started) * 1000
        )
        return worker

    def _relay(self, stream: IO[bytes], number: int) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._log.info("%s", render_log_line(line))
                if self._on_log_line is not None:
                    self._on_log_line(line)
        stream.close()

    def _finish(
        self,
        request_id: str,
        started: float,
        source: str,
        *,
        payload: Any = None,
        error: dict[str, Any] | None = None,
    ) -> InvokeResult:
        result = InvokeResult(
            request_id=request_id,
            ok=error is None,
            payload=payload,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        self.stats.invocations += 1
        if error is not None:
            self.stats.errors += 1
            self._log.warning(
                "invocation from %s failed after %d ms: %s", source, result.duration_ms, result.error_summary
            )
            trace = "".join(error.get("stackTrace") or []).rstrip()
            if trace:
                self._log.debug("%s", trace)
        return result


def lambda_error(error_type: str, message: str) -> dict[str, Any]:
    return {"errorType": error_type, "errorMessage": message, "stackTrace": []}


# Keys of a Powertools JSON log line that say nothing a reader of the local log needs.
_QUIET_KEYS = frozenset(
    {
        "level",
        "message",
        "timestamp",
        "service",
        "location",
        "xray_trace_id",
        "sampling_rate",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "correlation_id",
    }
)


def render_log_line(line: str) -> str:
    """A function's log line made readable: Powertools JSON as `LEVEL message key=value`, EMF as metrics."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    if "_aws" in record:  # an Embedded Metric Format blob
        return _metrics(record)
    if "level" not in record or "message" not in record:
        return line
    extras = " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in record.items()
        if key not in _QUIET_KEYS
    )
    return f"{record['level']} {record['message']}" + (f"  {extras}" if extras else "")


def _metrics(record: dict[str, Any]) -> str:
    names = [
        metric.get("Name")
        for directive in record["_aws"].get("CloudWatchMetrics", [])
        for metric in directive.get("Metrics", [])
    ]
    return "metrics " + " ".join(f"{name}={record.get(name)}" for name in names)
