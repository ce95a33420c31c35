"""`replay`: the archive's events of a time window put on the tracker's bus again (EventBridge StartReplay),
waiting until EventBridge says the replay is over.

Replayed events are the archived ones (their ids, their details) with a `replay-name` field; the
archive's own rule leaves them out, so a replay is never archived again. EventBridge replays whole time
windows, not event types: `--detail-type D` replays to the rules on the bus that match events of that
type (StartReplay's `FilterArns`), found by asking EventBridge whether each rule's pattern, its conditions
on the detail left out, matches such an event. A rule that also matches other types receives those too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ops.report import Report
from ops.target import Target, TargetError

FINISHED = {"COMPLETED", "FAILED", "CANCELLED"}
# The rule EventBridge keeps for an archive is named after it; it never takes replayed events.
_ARCHIVE_RULE_PREFIX = "Events-Archive-"


def replay(
    target: Target,
    *,
    start: datetime,
    end: datetime,
    detail_type: str | None = None,
    timeout_seconds: float = 900,
    poll_seconds: float = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> Report:
    events = target.client("events")
    archive_name = target.output("EventArchiveName")
    bus_arn = target.output("EventBusArn")
    archive_arn = events.describe_archive(ArchiveName=archive_name)["ArchiveArn"]
    report = Report(
        "replay", data={"archive": archive_name, "from": start.isoformat(), "to": end.isoformat()}
    )
    destination: dict[str, Any] = {"Arn": bus_arn}
    if detail_type is not None:
        rules = rules_matching(events, target, detail_type)
        report.data["rules"] = rules
        if not rules:
            bus = target.output("EventBusName")
            report.failed(f"no rule on {bus} matches {detail_type!r} events: nothing to replay to")
            return report
        destination["FilterArns"] = rules
        report.say(f"replaying to the {len(rules)} rule(s) matching {detail_type!r}")
    name = f"hpp-tracker-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    events.start_replay(
        ReplayName=name,
        Description="hpp-tracker replay",
        EventSourceArn=archive_arn,
        EventStartTime=start,
        EventEndTime=end,
        Destination=destination,
    )
    report.data["replay_name"] = name
    report.say(f"replay {name} of {archive_name}, {start.isoformat()} to {end.isoformat()}: started")
    state, described = _wait(events, name, timeout_seconds, poll_seconds, sleep)
    report.data["state"] = state
    report.data["last_replayed"] = described.get("EventLastReplayedTime")
    if state == "COMPLETED":
        report.say(f"replay {name}: COMPLETED")
    else:
        report.failed(f"replay {name}: {state} {described.get('StateReason', '')}".rstrip())
    return report


def _wait(
    events: Any, name: str, timeout_seconds: float, poll_seconds: float, sleep: Callable[[float], None]
) -> tuple[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_seconds
    while True:
        described: dict[str, Any] = events.describe_replay(ReplayName=name)
        state = str(described.get("State"))
        if state in FINISHED:
            return state, described
        if time.monotonic() >= deadline:
            return (
                f"still {state} after {timeout_seconds:g} s (it goes on; see describe-replay {name})",
                described,
            )
        sleep(poll_seconds)


def rules_matching(events: Any, target: Target, detail_type: str) -> list[str]:
    """The ARNs of the bus's rules whose pattern matches an event of `detail_type` from the tracker."""
    sample = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "account": target.output("EventBusArn").split(":")[4],
            "source": target.output("EventSource"),
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": target.session.region_name,
            "resources": [],
            "detail-type": detail_type,
            "detail": {},
        }
    )
    matching = []
    paginator = events.get_paginator("list_rules")
    for page in paginator.paginate(EventBusName=target.output("EventBusName")):
        for rule in page.get("Rules", []):
            pattern = rule.get("EventPattern")
            if not pattern or rule["Name"].startswith(_ARCHIVE_RULE_PREFIX):
                continue
            # Only the envelope is known (source, detail type): the rule's conditions on the detail are
            # left out, so a rule for some of the type's events (say COMPLETED ones) counts as matching.
            envelope = {key: value for key, value in json.loads(pattern).items() if key != "detail"}
            answer = events.test_event_pattern(EventPattern=json.dumps(envelope), Event=sample)
            if "Result" not in answer:  # moto answers TestEventPattern with nothing
                raise TargetError(
                    "the events endpoint does not answer TestEventPattern: --detail-type needs it"
                )
            if answer["Result"]:
                matching.append(rule["Arn"])
    return matching
