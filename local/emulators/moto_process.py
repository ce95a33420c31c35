"""moto in server mode as a child process on 127.0.0.1 (EventBridge, SQS, Secrets Manager, ...).

A process rather than a thread of the stack: moto's Flask app is busy under load and would compete with the
gateway and the stream pump for one interpreter. Spawned like DynamoDB Local (`ChildProcesses`): its own
session, and killed by the kernel if the stack itself dies, so no moto outlives the stack.
"""

from __future__ import annotations

import atexit
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO, Self

from local.common.lifecycle import ChildProcesses, Startable, stop_process
from local.emulators.dynamodb_local import HOST, free_port

_PORT_ATTEMPTS = 3


class MotoError(RuntimeError):
    """moto's server did not start."""


class MotoProcess(Startable):
    def __init__(
        self,
        *,
        python: str = sys.executable,
        startup_timeout: float = 30.0,
        processes: ChildProcesses | None = None,
    ) -> None:
        self._python = python
        self._processes = processes or ChildProcesses()
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None

    @property
    def endpoint_url(self) -> str:
        if self._port is None:
            raise MotoError("moto is not running: call start() first.")
        return f"http://{HOST}:{self._port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def spawn(self) -> None:
        """Start the process (returns at once; `wait_ready` waits for it): lets it boot alongside the JVM."""
        self._port = free_port()
        command = [self._python, "-m", "moto.server", "-H", HOST, "-p", str(self._port)]
        # Its request log goes to a file: a pipe nobody drains would block it.
        self._log = tempfile.TemporaryFile(prefix="moto-", suffix=".log")  # noqa: SIM115 - closed in stop()
        self._process = self._processes.spawn(
            command, die_with_thread=True, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
        )
        atexit.register(self.stop)

    def wait_ready(self) -> Self:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                raise MotoError(f"moto exited while starting:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):  # noqa: S310 - local
                    return self
            except urllib.error.HTTPError:
                return self  # it answered
            except OSError:
                time.sleep(0.1)
        raise MotoError(f"moto did not answer within {self._startup_timeout:.0f}s:\n{self._tail()}")

    def start(self) -> Self:
        last: MotoError | None = None
        for _ in range(_PORT_ATTEMPTS):  # a port picked free can be taken before moto binds it
            self.spawn()
            try:
                return self.wait_ready()
            except MotoError as error:
                last = error
                self.stop()
        raise last or MotoError("moto did not start")

    def stop(self, timeout: float = 10.0) -> None:
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        self._port = None
        stop_process(process, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _tail(self, limit: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-limit:].decode(errors="replace")
