"""`check`: is the deployment healthy? Each part is checked on its own and named in the answer.

- `secret`: the Klarna credentials secret is readable and holds `username` and `password`;
- `klarna-credentials`: Klarna accepts them: a read of a session id that cannot exist answers 404, not
  401/403;
- `callback-route`: the public callback route answers and refuses a forged callback (a made-up session
  with a made-up secret: 403 or 404, never 2xx; or 503 `unknown_session_budget_spent` while forged
  traffic has spent this minute's unknown-session budget). It costs the tracker one read of that budget
  and of Klarna (counted in `UnknownSessionReads`). While Klarna refuses the tracker's credentials the
  callback answers 502 `klarna_credentials_refused` once its cached copy of the secret
  (`CREDENTIALS_CACHE_SECONDS`) has expired: the part fails and says so;
- `sessions-table`, `due-index`, `stream`, `state-table`, `event-bus`, `archive`: they exist and are
  active (the stream is the one the stack's outputs name, with both images);
- `poller`: the poller reported a run (its `PollSessionsDue` metric) within the last minutes;
- `publisher-failure-queue`, `poller-dead-letter-queue`: empty.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from hpp_core.klarna import KlarnaAuthFailed, KlarnaCredentials, KlarnaError, KlarnaNotFound
from ops.report import Report
from ops.target import Target, TargetError

DUE_INDEX = "due-index"
_HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=10))


@dataclass(frozen=True)
class Part:
    name: str
    ok: bool
    detail: str


class _Failed(Exception):
    """A part is not healthy; the message says how."""


@dataclass
class Check:
    target: Target
    poller_within: timedelta

    def run(self) -> Report:
        credentials: list[KlarnaCredentials] = []
        parts = [
            self._part("secret", lambda: self._secret(credentials)),
            self._part("klarna-credentials", lambda: self._klarna(credentials)),
            self._part("callback-route", self._callback_route),
            *self._table_parts(),
            self._part("state-table", lambda: self._table_active("StateTableName")),
            self._part("event-bus", self._event_bus),
            self._part("archive", self._archive),
            self._part("poller", self._poller),
            self._part("publisher-failure-queue", lambda: self._queue_empty("PublisherFailureQueueUrl")),
            self._part("poller-dead-letter-queue", lambda: self._queue_empty("PollerDeadLetterQueueUrl")),
        ]
        failed = [part.name for part in parts if not part.ok]
        report = Report("check", ok=not failed, data={"parts": [asdict(p) for p in parts], "failed": failed})
        for part in parts:
            report.say(f"{'ok  ' if part.ok else 'FAIL'}  {part.name:<25} {part.detail}")
        report.say(f"check failed: {', '.join(failed)}" if failed else f"{self.target.description}: healthy")
        return report

    @staticmethod
    def _part(name: str, check: Callable[[], str]) -> Part:
        try:
            return Part(name, True, check())
        except (_Failed, TargetError) as problem:
            return Part(name, False, str(problem))
        except (BotoCoreError, ClientError) as error:
            return Part(name, False, f"{type(error).__name__}: {error}")

    # -- Klarna -------------------------------------------------------------------------------------

    def _secret(self, found: list[KlarnaCredentials]) -> str:
        found.append(self.target.klarna_credentials())
        return "readable, with username and password"

    def _klarna(self, found: list[KlarnaCredentials]) -> str:
        if not found:
            raise _Failed("not checked: the secret does not hold usable credentials")
        probe = f"hpp-tracker-check-{uuid.uuid4()}"
        try:
            self.target.klarna(found[0]).read_session(probe)
        except KlarnaNotFound:
            klarna = self.target.output("KlarnaApiUrl")
            return f"accepted: a read of a session that cannot exist answered 404 ({klarna})"
        except KlarnaAuthFailed as error:
            raise _Failed(
                f"Klarna refused the credentials ({error.http_status or 'unreadable secret'})"
            ) from None
        except KlarnaError as error:
            raise _Failed(f"Klarna did not answer as expected: {error}") from None
        raise _Failed("Klarna answered a session id that cannot exist with a session")

    def _callback_route(self) -> str:
        session_id = str(uuid.uuid4())
        query = urlencode({"session_id": session_id, "secret": secrets.token_urlsafe(24)})
        forged = {
            "event_id": str(uuid.uuid4()),
            "session": {
                "session_id": session_id,
                "status": "COMPLETED",
                "updated_at": datetime.now(UTC).isoformat(),
                "authorization_token": "forged-by-hpp-tracker-check",
            },
        }
        url = f"{self.target.output('CallbackUrl')}?{query}"
        try:
            answer = _HTTP.request(
                "POST", url, body=json.dumps(forged).encode(), headers={"Content-Type": "application/json"}
            )
        except urllib3.exceptions.HTTPError as error:
            raise _Failed(f"unreachable: {type(error).__name__}") from None
        return forged_callback_verdict(answer.status, answer.data)

    # -- storage, the bus, the archive --------------------------------------------------------------

    def _table_parts(self) -> list[Part]:
        described: dict[str, Any] = {}

        def table() -> str:
            described.update(self._describe_table("SessionsTableName"))
            return self._active(described)

        def index() -> str:
            indexes = {i["IndexName"]: i for i in described.get("GlobalSecondaryIndexes", [])}
            if DUE_INDEX not in indexes:
                raise _Failed(f"the table has no {DUE_INDEX}")
            status = indexes[DUE_INDEX].get("IndexStatus", "ACTIVE")
            if status != "ACTIVE":
                raise _Failed(f"{DUE_INDEX} is {status}")
            return f"{DUE_INDEX} ACTIVE"

        def stream() -> str:
            spec = described.get("StreamSpecification") or {}
            if not spec.get("StreamEnabled") or spec.get("StreamViewType") != "NEW_AND_OLD_IMAGES":
                raise _Failed(f"the table's stream is {spec or 'off'}, not NEW_AND_OLD_IMAGES")
            if described.get("LatestStreamArn") != self.target.output("SessionsTableStreamArn"):
                raise _Failed(
                    "the table's stream is not the one the publisher reads (SessionsTableStreamArn)"
                )
            return "NEW_AND_OLD_IMAGES, the publisher's"

        parts = [self._part("sessions-table", table)]
        if not parts[0].ok:
            return [*parts, Part("due-index", False, "not checked"), Part("stream", False, "not checked")]
        return [*parts, self._part("due-index", index), self._part("stream", stream)]

    def _describe_table(self, output: str) -> dict[str, Any]:
        table: dict[str, Any] = self.target.client("dynamodb").describe_table(
            TableName=self.target.output(output)
        )["Table"]
        return table

    def _table_active(self, output: str) -> str:
        return self._active(self._describe_table(output))

    @staticmethod
    def _active(table: dict[str, Any]) -> str:
        if table.get("TableStatus") != "ACTIVE":
            raise _Failed(f"{table.get('TableName')} is {table.get('TableStatus')}")
        return f"{table['TableName']} ACTIVE"

    def _event_bus(self) -> str:
        bus = self.target.client("events").describe_event_bus(Name=self.target.output("EventBusName"))
        return f"{bus['Name']} exists"

    def _archive(self) -> str:
        archive = self.target.client("events").describe_archive(
            ArchiveName=self.target.output("EventArchiveName")
        )
        state = archive.get("State")
        if state not in (None, "ENABLED"):
            raise _Failed(f"{archive['ArchiveName']} is {state}")
        return f"{archive['ArchiveName']} ENABLED, {archive.get('EventCount', 0)} event(s)"

    # -- the poller, the queues ---------------------------------------------------------------------

    def _poller(self) -> str:
        now = datetime.now(UTC)
        answer = self.target.client("cloudwatch").get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "runs",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "HppTracker",
                            "MetricName": "PollSessionsDue",
                            "Dimensions": [{"Name": "service", "Value": "hpp-poller"}],
                        },
                        "Period": 60,
                        "Stat": "SampleCount",
                    },
                }
            ],
            StartTime=now - self.poller_within,
            EndTime=now + timedelta(minutes=1),
        )
        (runs,) = answer["MetricDataResults"]
        reported = [moment for moment, count in zip(runs["Timestamps"], runs["Values"], strict=True) if count]
        minutes = int(self.poller_within.total_seconds() // 60)
        if not reported:
            raise _Failed(f"no poller run reported (PollSessionsDue) in the last {minutes} minute(s)")
        last = max(reported)
        return f"{int(sum(runs['Values']))} run(s) in the last {minutes} minute(s), the last at {last:%H:%M}"

    def _queue_empty(self, output: str) -> str:
        attributes = self.target.client("sqs").get_queue_attributes(
            QueueUrl=self.target.output(output),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        waiting = sum(int(value) for value in attributes.values())
        if waiting:
            raise _Failed(f"{waiting} message(s) in it (docs/runbook.md)")
        return "empty"


def check(target: Target, *, poller_within: timedelta = timedelta(minutes=10)) -> Report:
    return Check(target, poller_within).run()


def forged_callback_verdict(status: int, body: bytes) -> str:
    """What the callback route's answer to a forged callback says of it; _Failed unless it refused."""
    if status in (403, 404):
        return f"reachable; refused a forged callback ({status})"
    if 200 <= status < 300:  # noqa: PLR2004
        raise _Failed(f"ACCEPTED a forged callback ({status})")
    if status == 503 and _error_code(body) == "unknown_session_budget_spent":  # noqa: PLR2004
        # The budget refusing it unread is a refusal too: forged traffic has spent this minute's reads.
        return (
            "reachable; refused a forged callback (503 unknown_session_budget_spent: this minute's "
            "unknown-session reads are spent, see the runbook's unknown-session section)"
        )
    code = _error_code(body)
    # A 502 klarna_credentials_refused: the callback could not settle an unknown session with Klarna.
    said = f" {code}" if code else ""
    raise _Failed(f"answered {status}{said} to a forged callback (expected 403 or 404)")


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None
