"""Faults on AWS calls, injected at the HTTP level in front of the emulators.

The functions' code is unchanged: their `AWS_ENDPOINT_URL*` point at this proxy, which forwards to
DynamoDB Local or moto and, at the configured rates, answers a DynamoDB data call with
`ProvisionedThroughputExceededException` (what a throttled table answers; the SDK retries it) or fails
individual `PutEvents` entries (`FailedEntryCount` > 0, the failed entries never reach the bus: exactly
what EventBridge does on a partial failure). Operations are recognised by `X-Amz-Target` (every service
here speaks AWS's JSON protocol).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Self

import urllib3

from local.common.httpserver import HttpServer, Request, Response

_log = logging.getLogger("local.faults")

DYNAMODB_DATA_OPERATIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


@dataclass(frozen=True)
class AwsFaults:
    dynamodb_throttle_rate: float = 0.0  # share of DynamoDB data calls answered as throttled
    put_events_failure_rate: float = 0.0  # share of PutEvents entries that fail
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dynamodb_throttle_rate", "put_events_failure_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")

    def with_overrides(self, overrides: dict[str, str]) -> AwsFaults:
        """These faults with rates set from command-line strings, e.g. {"dynamodb_throttle_rate": "0.1"}."""
        known = ("dynamodb_throttle_rate", "put_events_failure_rate")
        unknown = set(overrides) - set(known)
        if unknown:
            raise ValueError(f"unknown AWS fault setting {sorted(unknown)}; known: {', '.join(known)}")
        rates: dict[str, Any] = {key: float(value) for key, value in overrides.items()}
        return replace(self, **rates)

    @property
    def active(self) -> bool:
        return self.dynamodb_throttle_rate > 0 or self.put_events_failure_rate > 0


AWS_FAULT_PROFILES = {
    "none": AwsFaults(),
    "default": AwsFaults(dynamodb_throttle_rate=0.02, put_events_failure_rate=0.05),
    "heavy": AwsFaults(dynamodb_throttle_rate=0.10, put_events_failure_rate=0.20),
}


class FaultProxy:
    """Forwards everything to `upstream`, failing some calls as `faults` says."""

    def __init__(self, upstream: str, faults: AwsFaults, *, name: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self.name = name
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(f"aws-faults/{faults.seed}/{name}")
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(maxsize=32, retries=False)
        self._server = HttpServer(self._handle, name=f"fault-proxy-{name}")

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._http.clear()

    @property
    def url(self) -> str:
        return self._server.url

    def _roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def _handle(self, request: Request) -> Response:
        target = request.header("X-Amz-Target") or ""
        service, _, operation = target.partition(".")
        data_call = service.startswith("DynamoDB_") and operation in DYNAMODB_DATA_OPERATIONS
        if data_call and self._roll(self.faults.dynamodb_throttle_rate):
            return self._throttled(operation)
        if target == "AWSEvents.PutEvents" and self.faults.put_events_failure_rate > 0:
            return self._put_events(request)
        return self._forward(request, request.body)

    def _throttled(self, operation: str) -> Response:
        with self._lock:
            self.injected[f"dynamodb_throttled.{operation}"] += 1
        _log.info("%s: %s answered ProvisionedThroughputExceededException (injected)", self.name, operation)
        body = {
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was exceeded (injected)",
        }
        return Response(400, json.dumps(body).encode(), [("Content-Type", "application/x-amz-json-1.0")])

    def _put_events(self, request: Request) -> Response:
        try:
            payload = json.loads(request.body)
            entries: list[Any] = list(payload["Entries"])
        except (ValueError, KeyError, TypeError):
            return self._forward(request, request.body)  # let the emulator say what is wrong with it
        failed = [self._roll(self.faults.put_events_failure_rate) for _ in entries]
        if not any(failed):
            return self._forward(request, request.body)
        kept = [entry for entry, fails in zip(entries, failed, strict=True) if not fails]
        upstream: dict[str, Any] = {"FailedEntryCount": 0, "Entries": []}
        if kept:
            response = self._forward(request, json.dumps({**payload, "Entries": kept}).encode())
            if response.status != 200:  # noqa: PLR2004
                return response
            upstream = json.loads(response.body)
        count = sum(failed)
        with self._lock:
            self.injected["put_events_entries_failed"] += count
        _log.info("%s: PutEvents failed %d of %d entries (injected)", self.name, count, len(entries))
        body = {
            "FailedEntryCount": int(upstream.get("FailedEntryCount") or 0) + count,
            "Entries": _entries_in_order(failed, upstream.get("Entries") or []),
        }
        return Response(200, json.dumps(body).encode(), [("Content-Type", "application/x-amz-json-1.1")])

    def _forward(self, request: Request, body: bytes) -> Response:
        headers = {name: value for name, value in request.headers if name.lower() not in _HOP_BY_HOP}
        try:
            upstream = self._http.request(
                request.method,
                self.upstream + request.target,
                body=body or None,
                headers=headers,
                redirect=False,
                timeout=urllib3.Timeout(connect=2, read=30),
            )
        except urllib3.exceptions.HTTPError as error:
            _log.warning("%s: upstream failed: %r", self.name, error)
            return Response(502, b"", [])
        response_headers = [(n, v) for n, v in upstream.headers.items() if n.lower() not in _HOP_BY_HOP]
        return Response(upstream.status, upstream.data, response_headers)


def _entries_in_order(failed: list[bool], answered: list[Any]) -> list[Any]:
    """PutEvents' result entries in the request's order: the injected failures between the upstream's."""
    upstream = iter(answered)
    injected = {"ErrorCode": "InternalFailure", "ErrorMessage": "Injected failure (local stack)"}
    return [dict(injected) if fails else next(upstream, {}) for fails in failed]
