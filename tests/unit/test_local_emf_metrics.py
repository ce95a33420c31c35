"""The local stack turns a function's Embedded Metric Format lines into CloudWatch metrics, as Lambda's log
ingestion does: every metric, once per dimension set, at the blob's time, in its namespace."""

import json
from datetime import UTC, datetime
from typing import Any

from local.emulators.metrics import CloudWatchMetrics, metric_data

EMF = {
    "_aws": {
        "Timestamp": 1767225600000,
        "CloudWatchMetrics": [
            {
                "Namespace": "HppTracker",
                "Dimensions": [["service"], ["service", "shard"]],
                "Metrics": [
                    {"Name": "PollSessionsDue", "Unit": "Count"},
                    {"Name": "PollLagSeconds", "Unit": "Seconds"},
                ],
            }
        ],
    },
    "service": "hpp-poller",
    "shard": 3,
    "PollSessionsDue": [4.0],
    "PollLagSeconds": [1.5, 2.5],
}


def test_every_metric_once_per_dimension_set_with_its_unit_time_and_values() -> None:
    entries = list(metric_data(EMF))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert [namespace for namespace, _ in entries] == ["HppTracker"] * 4
    assert [entry for _, entry in entries] == [
        {"MetricName": "PollSessionsDue", "Dimensions": [{"Name": "service", "Value": "hpp-poller"}],
         "Timestamp": at, "Unit": "Count", "Value": 4.0},
        {"MetricName": "PollLagSeconds", "Dimensions": [{"Name": "service", "Value": "hpp-poller"}],
         "Timestamp": at, "Unit": "Seconds", "Values": [1.5, 2.5]},
        {"MetricName": "PollSessionsDue",
         "Dimensions": [{"Name": "service", "Value": "hpp-poller"}, {"Name": "shard", "Value": "3"}],
         "Timestamp": at, "Unit": "Count", "Value": 4.0},
        {"MetricName": "PollLagSeconds",
         "Dimensions": [{"Name": "service", "Value": "hpp-poller"}, {"Name": "shard", "Value": "3"}],
         "Timestamp": at, "Unit": "Seconds", "Values": [1.5, 2.5]},
    ]  # fmt: skip


def test_log_lines_and_metrics_without_a_number_give_nothing() -> None:
    assert list(metric_data({"level": "INFO", "message": "poll run finished"})) == []
    odd = {**EMF, "PollSessionsDue": "four", "PollLagSeconds": [True]}
    assert list(metric_data(odd)) == []


class RecordingCloudWatch:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def put_metric_data(self, **request: Any) -> None:
        if self.fail:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        self.calls.append(request)


def test_only_emf_lines_are_sent_and_a_failing_endpoint_loses_them_quietly() -> None:
    cloudwatch = RecordingCloudWatch()
    sink = CloudWatchMetrics(cloudwatch, interval=0.01).start()
    sink.line(json.dumps({"level": "INFO", "message": "not metrics"}))
    sink.line("Traceback (most recent call last):")
    sink.line(json.dumps(EMF))
    sink.line('{"_aws": not json')
    sink.stop()
    assert [call["Namespace"] for call in cloudwatch.calls] == ["HppTracker"]
    assert len(cloudwatch.calls[0]["MetricData"]) == 4
    assert sink.sent == 4

    failing = CloudWatchMetrics(RecordingCloudWatch(fail=True), interval=0.01).start()
    failing.line(json.dumps(EMF))
    failing.stop()
    assert failing.sent == 0
