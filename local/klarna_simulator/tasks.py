"""Run functions at given times on a small pool of threads, and know when nothing is left to run.

Journeys' steps and callback deliveries are both tasks; `pending` (scheduled or running) is how the
simulator tells a caller it has settled.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_log = logging.getLogger("local.klarna")


class TaskScheduler:
    def __init__(self, *, workers: int, name: str) -> None:
        self._name = name
        self._workers = workers
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()  # ties run in the order they were scheduled
        self._condition = threading.Condition()
        self._pending = 0
        self._stopping = False
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix=self._name)
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._heap.clear()
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._thread = self._executor = None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def pending(self) -> int:
        """Tasks scheduled or running."""
        with self._condition:
            return self._pending

    def call_later(self, delay: float, function: Callable[[], None]) -> None:
        with self._condition:
            if self._stopping:
                return
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._order), function))
            self._pending += 1
            self._condition.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until no task is scheduled or running; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._condition.wait(timeout)
                if self._stopping:
                    return
                _, _, function = heapq.heappop(self._heap)
            executor = self._executor
            if executor is None:
                return
            try:
                executor.submit(self._call, function)
            except RuntimeError:  # shut down meanwhile
                return

    def _call(self, function: Callable[[], None]) -> None:
        try:
            function()
        except Exception:
            _log.exception("%s: a scheduled task failed", self._name)
        finally:
            with self._condition:
                self._pending -= 1
                self._condition.notify_all()
