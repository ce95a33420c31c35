"""The local scheduler delivers what EventBridge Scheduler would: the template's Input with Scheduler's
context attributes filled in (the poller validates them), or the default notification."""

import json
from datetime import UTC, datetime

from local.emulators.scheduler import ScheduleSpec
from local.template import Template

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def poller_schedule() -> ScheduleSpec:
    """The poller's ScheduleV2 event exactly as template.yaml declares it."""
    [spec] = [spec for spec in Template.load().functions() if spec.logical_id == "PollerFunction"]
    [event] = spec.events_of("ScheduleV2")
    return ScheduleSpec("PollerFunction", event.name, event.type, "rate(1 minute)", event.properties["Input"])


def test_the_pollers_input_gets_schedulers_context_attributes() -> None:
    payload = poller_schedule().payload(region="eu-west-1", account="123456789012", now=NOW)

    assert payload["schedule_arn"].startswith("arn:aws:scheduler:eu-west-1:123456789012:schedule/default/")
    assert payload["scheduled_time"] == "2026-03-02T12:00:00Z"
    assert payload["attempt_number"] == "1"
    assert len(payload["execution_id"]) == 16
    assert "<aws.scheduler." not in json.dumps(payload)


def test_each_run_gets_its_own_execution_id() -> None:
    schedule = poller_schedule()
    first = schedule.payload(region="eu-west-1", account="123456789012", now=NOW)
    second = schedule.payload(region="eu-west-1", account="123456789012", now=NOW)
    assert first["execution_id"] != second["execution_id"]


def test_a_rule_schedules_input_is_delivered_as_written() -> None:
    # EventBridge rules have no context attributes: the text goes through unchanged.
    spec = ScheduleSpec("F", "Tick", "Schedule", "rate(1 minute)", '{"note": "<aws.scheduler.execution-id>"}')
    assert spec.payload(region="eu-west-1", account="1", now=NOW) == {"note": "<aws.scheduler.execution-id>"}


def test_without_input_a_scheduler_event_is_the_default_notification() -> None:
    spec = ScheduleSpec("F", "Tick", "ScheduleV2", "rate(1 minute)")
    payload = spec.payload(region="eu-west-1", account="123456789012", now=NOW)
    assert payload["source"] == "aws.scheduler" and payload["detail-type"] == "Scheduled Event"
    assert payload["time"] == "2026-03-02T12:00:00Z"
