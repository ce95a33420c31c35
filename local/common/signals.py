"""SIGINT and SIGTERM turned into a call in an ordinary thread, where stopping may take locks.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread holds a
lock, and Python's locks are not reentrant: a handler that takes a lock the main thread holds waits for
itself forever. That is how the local stack used to hang on SIGTERM: its handler called
`threading.Event.set()` while the main thread was inside `wait()` on the same event, holding the lock
both take (python/cpython#126434 is the same trap with multiprocessing.Event). Here the handler does
nothing: `signal.set_wakeup_fd` makes the interpreter's C-level handler write the signal's number to a
socket, and a watcher thread blocked on that socket makes the call.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any, Self

_WAKE = b"\0"  # no signal has number 0: the watcher's "stop watching"


def _do_nothing(signum: int, frame: FrameType | None) -> None:
    """Installed so that the signal neither kills the process nor raises; the wakeup fd does the work."""


class StopSignals:
    """`with StopSignals(on_signal):` calls `on_signal(signal)` once, from a thread of its own, for the first
    SIGINT or SIGTERM; leaving the block waits for that call to finish. Enter it in the main thread."""

    def __init__(
        self,
        on_signal: Callable[[signal.Signals], None],
        signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    ) -> None:
        self._on_signal = on_signal
        self._signals = frozenset(signals)
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)  # set_wakeup_fd requires it
        self._watcher = threading.Thread(target=self._watch, name="stop-signals", daemon=True)
        self._previous_fd = -1
        self._previous_handlers: dict[signal.Signals, Any] = {}

    def __enter__(self) -> Self:
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous_handlers = {sig: signal.signal(sig, _do_nothing) for sig in self._signals}
        self._watcher.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._writer.send(_WAKE)
        self._watcher.join()  # a stop in progress finishes before the handlers are put back
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()

    def _watch(self) -> None:
        while True:
            for number in self._reader.recv(64):
                if number == _WAKE[0]:
                    return
                if number in self._signals:
                    self._on_signal(signal.Signals(number))
                    return
