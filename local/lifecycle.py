"""One way for the local servers and emulators to be used in a `with` block, and to stop their processes."""

import subprocess
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


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Terminate a child process (SIGTERM), kill it if it lingers past `timeout` seconds, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
