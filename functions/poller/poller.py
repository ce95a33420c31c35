"""Lambda run by EventBridge Scheduler (every minute by default): the reconciliation poller.

Thin on purpose: the run is hpp_core.poller.run_poll; this module builds its adapters once per execution
environment, gives it the invocation's remaining time, and turns its report into metrics and log lines.
"""

import gc

# No collections during init: what it builds (the SDK, Powertools, models, clients) lives as long as the
# execution environment, and collecting while it grows was a quarter of the cold start (docs/performance.md).
gc.disable()

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, ValidationError

from hpp_core.dependencies import klarna_client, session_repository, state_repository
from hpp_core.klarna import KlarnaError
from hpp_core.logs import service_logger
from hpp_core.poller import (
    PollerSettings,
    PollOutcome,
    PollRunReport,
    PollThreads,
    StopReason,
    run_poll,
)
from hpp_core.settings import load_settings
from hpp_core.tracing import traced_handler

settings = load_settings(PollerSettings)
logger = service_logger()
metrics = Metrics()
repository = session_repository(
    settings,
    max_pool_connections=PollThreads.dynamodb_connections(settings.poll_concurrency),
    validate_requests=False,
)
# The poller's own state (the evidence of lost callbacks), read and written once a run.
state = state_repository(settings)
klarna = klarna_client(settings)
# Kept across invocations like the clients: a run starts no threads of its own.
threads = PollThreads(settings.poll_concurrency)

# Emitted every run, zero or not, so dashboards and alarms see a value (each is one custom metric).
ALWAYS = {
    "PollSessionsChanged": PollOutcome.CHANGED,
    "PollSessionsExpired": PollOutcome.EXPIRED,
}
# Emitted only when non-zero: rare outcomes do not need a custom metric every hour.
WHEN_NON_ZERO = {
    "PollSessionsUnchanged": PollOutcome.UNCHANGED,
    "PollSessionsNotFound": PollOutcome.NOT_FOUND,
    "PollSessionsParked": PollOutcome.PARKED,
    "PollSessionsGivenUp": PollOutcome.GIVEN_UP,
    "PollSessionsSuperseded": PollOutcome.SUPERSEDED,
    "PollSessionsLeftDue": PollOutcome.LEFT_DUE,
}


class ScheduledInvocation(BaseModel):
    """The schedule's Input (template.yaml): Scheduler's context attributes, for correlation only."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schedule_arn: str | None = None
    scheduled_time: str | None = None
    execution_id: str | None = None
    attempt_number: int | None = None


@traced_handler
@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    invocation = _invocation(event)
    logger.append_keys(scheduled_time=invocation.scheduled_time, execution_id=invocation.execution_id)
    report = run_poll(
        repository,
        klarna,
        policy=settings.policy(),
        remaining_time_ms=context.get_remaining_time_in_millis,
        state=state,
        threads=threads,
    )
    _publish_metrics(report)
    _log(report)
    return report.summary()


def _invocation(event: Any) -> ScheduledInvocation:
    # Anything may invoke the poller by hand; a run never depends on what the event says.
    try:
        return ScheduledInvocation.model_validate(event if isinstance(event, dict) else {})
    except ValidationError:
        logger.warning("unexpected invocation event; polling anyway")
        return ScheduledInvocation()


def _publish_metrics(report: PollRunReport) -> None:
    metrics.add_metric(name="PollSessionsDue", unit=MetricUnit.Count, value=report.due)
    metrics.add_metric(name="PollSessionsRead", unit=MetricUnit.Count, value=report.read_from_klarna)
    metrics.add_metric(name="PollThrottles", unit=MetricUnit.Count, value=report.throttles)
    # The "falling behind" signal: how long the oldest due session had been waiting (alarmed on).
    metrics.add_metric(name="PollLagSeconds", unit=MetricUnit.Seconds, value=report.oldest_due_lag_seconds)
    # Lost callbacks: the share of recent reads that found a change no callback had reported (what the
    # run goes by to catch up), and the reads this run made to catch up.
    if report.evidence_percent is not None:
        metrics.add_metric(
            name="PollLostCallbackEvidence", unit=MetricUnit.Percent, value=report.evidence_percent
        )
    metrics.add_metric(name="PollCatchUpReads", unit=MetricUnit.Count, value=report.catch_up_reads)
    for name, outcome in ALWAYS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=report.outcomes[outcome])
    for name, outcome in WHEN_NON_ZERO.items():
        if report.outcomes[outcome]:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=report.outcomes[outcome])
    errors = sum(report.errors.values())
    if errors:
        metrics.add_metric(name="PollErrors", unit=MetricUnit.Count, value=errors)
    for kind, count in report.errors.items():
        metrics.add_metric(name=f"PollErrors_{kind}", unit=MetricUnit.Count, value=count)
    if refused := report.errors["KlarnaUrlRefused"]:  # the name every function counts these under
        metrics.add_metric(name="KlarnaUrlRefused", unit=MetricUnit.Count, value=refused)
    if report.stopped is StopReason.KLARNA_AUTH_FAILED:
        metrics.add_metric(name="KlarnaAuthFailed", unit=MetricUnit.Count, value=1)
    elif report.stopped is StopReason.TIME_BUDGET:
        metrics.add_metric(name="PollRunCutShort", unit=MetricUnit.Count, value=1)


def _log(report: PollRunReport) -> None:
    for problem in report.problems:
        fields: dict[str, Any] = {
            "session_id": problem.session_id,
            "outcome": problem.outcome,
            "error_kind": problem.error_kind,
        }
        if isinstance(problem.error, KlarnaError):
            fields |= problem.error.log_fields() | {"error": str(problem.error)}
        elif problem.error is not None:
            fields["error"] = f"{type(problem.error).__name__}: {str(problem.error)[:200]}"
        logger.warning("session poll failed", extra=fields)
    if report.stopped is StopReason.KLARNA_AUTH_FAILED:
        logger.error(
            "Klarna refused the tracker's credentials (or they could not be read): poll run stopped; "
            "check the secret KLARNA_CREDENTIALS_SECRET_ARN names and KLARNA_API_URL",
            extra={"poll": report.summary()},
        )
    elif report.stopped is StopReason.TIME_BUDGET:
        logger.warning(
            "poll run stopped at its time budget; the rest stays due", extra={"poll": report.summary()}
        )
    else:
        logger.info("poll run finished", extra={"poll": report.summary()})


# Init ends here: what it built is frozen (never scanned by the collector again), and collection resumes
# for what the invocations allocate.
gc.freeze()
gc.enable()
