"""A merchant endpoint for Klarna's callbacks in tests: records every request and answers as scripted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from local.common.httpserver import HttpServer, Request, Response
from local.common.lifecycle import Startable


@dataclass(frozen=True)
class Received:
    request: Request
    monotonic: float

    @property
    def body(self) -> bytes:
        return self.request.body

    def json(self) -> Any:
        return json.loads(self.request.body) if self.request.body else None


# Given the request and how many came before it, the answer (None: hang up without one).
type Script = Callable[[Request, int], Response | None]


def always(status: int) -> Script:
    return lambda request, index: Response(status)


class CallbackReceiver(Startable):
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or always(200)
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._server = HttpServer(self._handle, name="callback-receiver")

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    def status_update_url(self, secret: str = "test-secret") -> str:  # noqa: S107 - a test value
        """A `merchant_urls.status_update` as the tracker builds one: placeholder and a secret."""
        return f"{self.url}/callbacks/hpp?session_id={{{{session_id}}}}&secret={secret}"

    @property
    def received(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {count} requests, got {len(self._received)}")
                self._changed.wait(remaining)
            return list(self._received)

    def _handle(self, request: Request) -> Response | None:
        with self._changed:
            index = len(self._received)
            self._received.append(Received(request, time.monotonic()))
            self._changed.notify_all()
        return self.script(request, index)
