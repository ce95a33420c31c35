"""The local stack's readable rendering of a function's log lines, and its schedules' payloads."""

import json
from datetime import UTC, datetime

from local.emulators.runtime import render_log_line
from local.emulators.scheduler import ScheduleSpec, rate_seconds


def test_powertools_json_lines_become_level_message_and_fields() -> None:
    line = json.dumps(
        {
            "level": "INFO",
            "location": "receive_callback:48",
            "message": "callback handled",
            "timestamp": "2026-11-21 23:58:57,274+0000",
            "service": "hpp-callback",
            "outcome": "applied",
            "details": {"field": "status"},
        }
    )
    assert render_log_line(line) == 'INFO callback handled  outcome=applied details={"field": "status"}'


def test_metrics_blobs_become_one_line_and_other_text_stays_as_is() -> None:
    emf = {
        "_aws": {
            "Timestamp": 1,
            "CloudWatchMetrics": [{"Namespace": "N", "Metrics": [{"Name": "Callback_applied"}]}],
        },
        "Callback_applied": [1.0],
    }
    assert render_log_line(json.dumps(emf)) == "metrics Callback_applied=[1.0]"
    assert render_log_line("Traceback (most recent call last):") == "Traceback (most recent call last):"
    assert render_log_line('["not", "a", "record"]') == '["not", "a", "record"]'


def test_rate_expressions_give_their_interval_and_cron_gives_none() -> None:
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(2 hours)") == 7200
    assert rate_seconds("cron(0 12 * * ? *)") is None


def test_a_schedule_delivers_its_input_or_the_default_notification() -> None:
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    with_input = ScheduleSpec("Poller", "Every", "ScheduleV2", "rate(1 minute)", input='{"shards": 4}')
    without = ScheduleSpec("Poller", "Every", "ScheduleV2", "rate(1 minute)")
    legacy = ScheduleSpec("Poller", "Every", "Schedule", "rate(1 minute)")

    assert with_input.payload(region="eu-west-1", account="123456789012", now=now) == {"shards": 4}
    default = without.payload(region="eu-west-1", account="123456789012", now=now)
    assert (default["source"], default["detail-type"], default["time"]) == (
        "aws.scheduler",
        "Scheduled Event",
        "2026-11-21T12:00:00Z",
    )
    assert default["resources"] == ["arn:aws:scheduler:eu-west-1:123456789012:schedule/default/Poller-Every"]
    assert legacy.payload(region="eu-west-1", account="123456789012", now=now)["source"] == "aws.events"
