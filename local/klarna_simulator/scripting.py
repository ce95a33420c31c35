"""What tests script and observe on the simulated Klarna's merchant API (not the consumer page, not
`/_simulator/`): faults, which override Klarna's answer to matching requests, and the log of every
request received, which is the evidence of what a client really sent and when.

Faults and the log are kept apart from Klarna's behaviour: with no fault scripted the simulator
answers as Klarna does, and the log only watches.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local.common.httpserver import Request, Response

# A scripted body: raw bytes or text (sent as they are), or JSON; None: Klarna's error body for a 4xx/5xx.
type Body = bytes | str | Mapping[str, Any] | list[Any] | None


@dataclass
class RecordedRequest:
    """One request as the simulator received it. Header names are lower-cased."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    json: Any  # the parsed body, or None when empty or not JSON (see `body` for the raw bytes)
    received_at: datetime
    monotonic: float  # time.monotonic() at receipt, for measuring gaps between calls
    authorized: bool  # it carried the merchant's credentials
    response_status: int | None = None  # the status sent; stays None for a dropped connection

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def as_dict(self) -> dict[str, Any]:
        """For `GET /_simulator/requests`: JSON-safe (the raw body base64-encoded)."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body_base64": base64.b64encode(self.body).decode(),
            "json": self.json,
            "received_at": self.received_at.isoformat(),
            "monotonic": self.monotonic,
            "authorized": self.authorized,
            "response_status": self.response_status,
        }


def path_of(prefix: str | None) -> str | None:
    """A path prefix; a full URL (a `session_url`, which tests often have at hand) counts by its path."""
    if prefix is not None and prefix.startswith(("http://", "https://")):
        return urlsplit(prefix).path
    return prefix


class RequestLog:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._requests: list[RecordedRequest] = []

    def record(self, request: Request, *, authorized: bool) -> RecordedRequest:
        try:
            parsed = json.loads(request.body) if request.body else None
        except ValueError:
            parsed = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=parse_qs(request.query_string, keep_blank_values=True),
            headers={name.lower(): value for name, value in request.headers},
            body=request.body,
            json=parsed,
            received_at=datetime.now(UTC),
            monotonic=time.monotonic(),
            authorized=authorized,
        )
        with self._changed:
            self._requests.append(recorded)
            self._changed.notify_all()
        return recorded

    def matching(self, method: str | None = None, path_prefix: str | None = None) -> list[RecordedRequest]:
        prefix = path_of(path_prefix)
        with self._changed:
            return [
                request
                for request in self._requests
                if (method is None or request.method == method.upper())
                and (prefix is None or request.path.startswith(prefix))
            ]

    def wait_for(
        self, count: int, method: str | None, path_prefix: str | None, timeout: float
    ) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(found := self.matching(method, path_prefix)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"expected {count} requests, got {len(found)}")
                self._changed.wait(remaining)
            return found

    def clear(self) -> None:
        with self._changed:
            self._requests.clear()


@dataclass
class Fault:
    """A scripted answer for matching requests (method and path prefix; None matches any).

    `status=None`: wait `delay`, then answer as Klarna would. `times=None`: until removed.
    `disconnect`: close the connection without an answer.
    """

    method: str | None
    path_prefix: str | None
    status: int | None = 500
    body: Body = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    times: int | None = 1
    disconnect: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def response(self, status: int, error_body: dict[str, Any]) -> Response:
        """The scripted answer: exactly the body and headers given (a raw body is labelled JSON unless
        the headers say otherwise: a "JSON" answer that does not parse)."""
        headers = list(self.headers.items())
        body = self.body
        if body is None:
            failed = status >= HTTPStatus.BAD_REQUEST
            return Response.json(status, error_body, headers) if failed else Response(status, b"", headers)
        if isinstance(body, bytes | str):
            raw = body.encode() if isinstance(body, str) else body
            if not any(name.lower() == "content-type" for name, _ in headers):
                headers.append(("Content-Type", "application/json"))
            return Response(status, raw, headers)
        return Response.json(status, body, headers)


class FaultScript:
    """Faults in the order added; the first that matches a request answers it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        fault.path_prefix = path_of(fault.path_prefix)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The fault that answers this request (counting its use), or None."""
        with self._lock:
            fault = next((fault for fault in self._faults if fault.matches(method, path)), None)
            if fault is None:
                return None
            fault.hits += 1
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
            return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def snapshot(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)
