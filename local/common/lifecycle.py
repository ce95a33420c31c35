"""How the local servers and emulators start and stop: a `with` block, and the processes they start.

`ChildProcesses` is the one place a local component starts a process. An owner (the local stack) that
closes it ends every process started through it at once, and no process starts through it afterwards:
a stop that races a start (a signal while the stack is still starting) cannot leave one behind.
"""

import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Self


class Startable:
    """`with Thing() as thing:` starts it and stops it on the way out, whatever happened inside."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ProcessesClosed(RuntimeError):
    """A process was to start after its owner had begun to stop."""


class ChildProcesses:
    """The processes started for one owner, each in its own session (a Ctrl-C in the terminal reaches the
    owner only, which stops them in order)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: list[subprocess.Popen[bytes]] = []
        self._closed = False

    def spawn(
        self, command: Sequence[str], *, die_with_thread: bool = False, **popen: Any
    ) -> subprocess.Popen[bytes]:
        """Start `command` (keyword arguments as for Popen); ProcessesClosed once `close()` was called.

        `die_with_thread`: where util-linux's setpriv exists, the kernel kills the process when the thread
        that started it ends (SIGKILL of this process included), which neither stop() nor atexit covers.
        Only for a process started by a thread that lives as long as the process should.
        """
        setpriv = shutil.which("setpriv") if die_with_thread else None
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        with self._lock:
            if self._closed:
                raise ProcessesClosed(f"stopping: {command[-1]!r} not started")
            process = subprocess.Popen(command, start_new_session=True, **popen)
            self._running = [running for running in self._running if running.poll() is None]
            self._running.append(process)
        return process

    def close(self, timeout: float = 3.0) -> None:
        """End every process started here (SIGTERM; SIGKILL after `timeout` seconds); start no more."""
        with self._lock:
            self._closed = True
            running, self._running = self._running, []
        stop_processes(running, timeout)


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Terminate a child process (SIGTERM), kill it if it lingers past `timeout` seconds, and reap it."""
    stop_processes([] if process is None else [process], timeout)


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    """`stop_process` for several at once: all are asked to stop first, so they stop in parallel."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
