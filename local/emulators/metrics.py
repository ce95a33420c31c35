"""What Lambda's log ingestion does with Embedded Metric Format lines: CloudWatch metrics.

A function's stdout line that is an EMF blob (Powertools Metrics writes one per invocation) becomes
PutMetricData on moto's CloudWatch, in the blob's namespace, with each of its dimension sets, at its
timestamp. So what reads metrics on AWS works on the local stack too (`hpp-tracker check` asks CloudWatch
whether the poller ran). The relay threads only queue lines; one thread sends them, so a slow emulator
never holds up a function's log.

Hand-written: no Python library turns EMF into PutMetricData (on AWS, Lambda does it; elsewhere the
CloudWatch agent, which is not a library).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

_log = logging.getLogger("local.metrics")
# PutMetricData takes at most 1000 metrics per call.
_MAX_PER_CALL = 1000


def metric_data(record: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(namespace, PutMetricData entry) for every metric of an EMF record, once per dimension set.

    A record that is not EMF, or a metric without a numeric value, yields nothing.
    """
    metadata = record.get("_aws")
    if not isinstance(metadata, dict):
        return
    timestamp = datetime.fromtimestamp(float(metadata.get("Timestamp", 0)) / 1000, UTC)
    for directive in metadata.get("CloudWatchMetrics") or []:
        namespace = directive.get("Namespace")
        for dimension_set in directive.get("Dimensions") or [[]]:
            dimensions = [{"Name": key, "Value": str(record[key])} for key in dimension_set if key in record]
            for metric in directive.get("Metrics") or []:
                entry = _entry(metric, record.get(metric.get("Name")), dimensions, timestamp)
                if namespace and entry is not None:
                    yield namespace, entry


def _entry(
    metric: dict[str, Any], value: Any, dimensions: list[dict[str, str]], timestamp: datetime
) -> dict[str, Any] | None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    entry: dict[str, Any] = {
        "MetricName": metric["Name"],
        "Dimensions": dimensions,
        "Timestamp": timestamp,
        "Unit": metric.get("Unit") or "None",
    }
    if len(values) == 1:
        entry["Value"] = float(values[0])
    else:
        entry["Values"] = [float(v) for v in values]
    return entry


class CloudWatchMetrics:
    """Sends the metrics of the EMF lines it is given to CloudWatch (moto), in the background."""

    def __init__(self, client: Any, *, interval: float = 0.5) -> None:
        self._client = client
        self._interval = interval
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emf-to-cloudwatch", daemon=True)
        self.sent = 0

    def start(self) -> CloudWatchMetrics:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def line(self, line: str) -> None:
        """A function's log line; only EMF blobs are kept (cheap check first: most lines are logs)."""
        if line.startswith("{") and '"_aws"' in line:
            self._lines.put(line)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        by_namespace: dict[str, list[dict[str, Any]]] = defaultdict(list)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                for namespace, entry in metric_data(record):
                    by_namespace[namespace].append(entry)
        for namespace, entries in by_namespace.items():
            for start in range(0, len(entries), _MAX_PER_CALL):
                self._put(namespace, entries[start : start + _MAX_PER_CALL])

    def _put(self, namespace: str, entries: list[dict[str, Any]]) -> None:
        try:
            self._client.put_metric_data(Namespace=namespace, MetricData=entries)
            self.sent += len(entries)
        except (BotoCoreError, ClientError) as error:
            if not self._stop.is_set():
                _log.warning("could not put %d metric(s) in %s: %s", len(entries), namespace, error)
