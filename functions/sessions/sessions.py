"""Lambda behind the IAM-authorized sessions API: `POST /sessions`, `PUT|GET|DELETE /sessions/{id}`,
`POST /sessions/{id}/distribution`.

Thin on purpose: parse the API Gateway event, let the core (hpp_core.sessions) decide, map the result.
Errors become HTTP answers in hpp_core.http (routing: hpp_core.rest_resolver). Nothing here logs a
request body (a distribution's holds the consumer's e-mail or phone number), a callback secret or an
authorization token.
"""

import gc

# No collections during init: what it builds (the SDK, Powertools, models, clients) lives as long as the
# execution environment, and collecting while it grows was a quarter of the cold start (docs/performance.md).
gc.disable()

from functools import cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hpp_core.dependencies import idempotent_creates, klarna_client, session_repository
from hpp_core.klarna import KlarnaError, RetryPolicy
from hpp_core.logs import service_logger
from hpp_core.rest_resolver import StrictRestResolver, install_error_handlers, json_response
from hpp_core.sessions import (
    IDEMPOTENCY_KEY_HEADER,
    SETTLED_CREATE_FAILURES,
    CreateSessionRequest,
    SessionsSettings,
    callback_url,
    create_session,
    disable_session,
    distribute_session,
    idempotency_key,
    parse_create_request,
    parse_distribution_request,
    session_view,
    track_session,
    tracked_session,
)
from hpp_core.settings import load_settings
from hpp_core.tracing import annotate_session, traced_handler

if TYPE_CHECKING:
    from hpp_core.idempotency import Answer, IdempotentCreates

# Kept free after the last Klarna call for the DynamoDB write and the answer: with the default AWS call
# budget (settings.AwsCallSettings) one call takes at most 3 x (0.5 + 1.0) s and botocore's backoff
# (25 ms between attempts; when DynamoDB throttles, 1 s and 2 s, which this does not cover).
RESERVED_SECONDS = 5.0
MIN_KLARNA_TIMEOUT_SECONDS = 0.2

settings = load_settings(SessionsSettings)
logger = service_logger()
metrics = Metrics()
app = StrictRestResolver()
answer_error = install_error_handlers(app, logger, metrics)
repository = session_repository(settings)
klarna = klarna_client(settings)


def _log_retry(error: KlarnaError, attempt: int, delay: float) -> None:
    logger.warning(
        "retrying Klarna call",
        extra={**error.log_fields(), "attempt": attempt, "delay_seconds": round(delay, 3)},
    )
    metrics.add_metric(name="KlarnaRetry", unit=MetricUnit.Count, value=1)


retry_policy = settings.retry_policy(on_retry=_log_retry)


def _time_left() -> float:
    """Seconds this invocation may still spend on Klarna (its Lambda time minus what the end needs)."""
    return app.lambda_context.get_remaining_time_in_millis() / 1000 - RESERVED_SECONDS


def _retry() -> RetryPolicy:
    return retry_policy.within(_time_left())


def _klarna_timeout() -> float:
    """One non-retried Klarna call's timeout (create, distribute): the client's, within the time left."""
    return max(min(settings.klarna_timeout_seconds, _time_left()), MIN_KLARNA_TIMEOUT_SECONDS)


@app.post("/sessions")
def create() -> Response[Any]:
    event = app.current_event
    key = idempotency_key(_header_values(IDEMPOTENCY_KEY_HEADER))
    request = parse_create_request(event.body, base64_encoded=bool(event.is_base64_encoded))
    context = event.request_context
    url = callback_url(
        settings.callback_base,
        domain_name=context.domain_name,
        stage=context.stage,
        api_id=context.api_id,
    )
    if key is None:
        return json_response(HTTPStatus.CREATED, _create(request, url))
    answer = _idempotent_creates().answer(
        key=key,
        principal=context.identity.user_arn,
        body=request.model_dump(mode="json", exclude_unset=True),
        context=app.lambda_context,
        create=lambda: _create_answer(request, url),
    )
    if answer.replayed:
        if isinstance(answer.body, dict) and isinstance(answer.body.get("session_id"), str):
            _log_session(answer.body["session_id"])
        metrics.add_metric(name="SessionCreateReplayed", unit=MetricUnit.Count, value=1)
        logger.info("idempotent create replayed", extra={"http_status": answer.status})
    headers = {**answer.headers, "Idempotent-Replayed": str(answer.replayed).lower()}
    return json_response(answer.status, answer.body, headers)


def _create(request: CreateSessionRequest, url: str) -> dict[str, Any]:
    """Create at Klarna and track it; Klarna's answer."""
    result = create_session(
        request, callback_url=url, klarna=klarna, store=repository, timeout_seconds=_klarna_timeout()
    )
    logger.append_keys(session_id=result.session_id)
    annotate_session(result.session_id)
    metrics.add_metric(name="SessionCreated", unit=MetricUnit.Count, value=1)
    logger.info("session created", extra={"already_tracked": result.already_tracked})
    return result.created.body


def _create_answer(request: CreateSessionRequest, url: str) -> "Answer":
    """The answer an idempotent create remembers: Klarna's, or a failure that settles the request (any
    other failure is raised, and so forgotten)."""
    from hpp_core.idempotency import Answer  # noqa: PLC0415 - loaded already by _idempotent_creates

    try:
        return Answer(HTTPStatus.CREATED, _create(request, url))
    except SETTLED_CREATE_FAILURES as settled:
        return Answer(*answer_error(settled))


@cache
def _idempotent_creates() -> "IdempotentCreates":
    return idempotent_creates(settings.idempotency_table_name, settings.aws_call_config())


def _header_values(name: str) -> list[str]:
    event = app.current_event
    values = event.multi_value_headers.get(name)
    if values:
        return list(values)
    value = event.headers.get(name)
    return [] if value is None else [value]


@app.put("/sessions/<session_id>")
def track(session_id: str) -> Response[Any]:
    _log_session(session_id)
    result = track_session(session_id, klarna=klarna, store=repository, retry=_retry())
    metrics.add_metric(name=f"SessionTracked_{result.outcome}", unit=MetricUnit.Count, value=1)
    logger.info("session tracked", extra={"outcome": result.outcome, "stored_status": result.session.status})
    return json_response(HTTPStatus.OK, session_view(result.session))


@app.get("/sessions/<session_id>")
def read(session_id: str) -> Response[Any]:
    _log_session(session_id)
    session = tracked_session(session_id, store=repository)
    metrics.add_metric(name="SessionRead", unit=MetricUnit.Count, value=1)
    return json_response(HTTPStatus.OK, session_view(session))


@app.delete("/sessions/<session_id>")
def disable(session_id: str) -> Response[Any]:
    _log_session(session_id)
    result = disable_session(session_id, klarna=klarna, store=repository, retry=_retry())
    metrics.add_metric(name=f"Session_{result.outcome}", unit=MetricUnit.Count, value=1)
    logger.info(
        "session disabled",
        extra={
            "outcome": result.outcome,
            "recorded_from": result.recorded_from,
            "read_back_error": result.read_back_error,
        },
    )
    return Response(status_code=HTTPStatus.NO_CONTENT, body=None)


@app.post("/sessions/<session_id>/distribution")
def distribute(session_id: str) -> Response[Any]:
    _log_session(session_id)
    event = app.current_event
    request = parse_distribution_request(event.body, base64_encoded=bool(event.is_base64_encoded))
    distribute_session(
        session_id,
        request,
        klarna=klarna,
        store=repository,
        retry=_retry(),
        timeout_seconds=_klarna_timeout(),
    )
    metrics.add_metric(name="SessionDistributed", unit=MetricUnit.Count, value=1)
    # The method only: the contact data is the consumer's.
    logger.info("payment link sent", extra={"method": request.method})
    return Response(status_code=HTTPStatus.NO_CONTENT, body=None)


def _log_session(session_id: str) -> None:
    # JSON logging escapes it; truncation keeps a hostile value from bloating every line.
    logger.append_keys(session_id=session_id[:128])
    annotate_session(session_id)


# clear_state: keys appended for one request (session_id, caller) must not stick to the next one's lines.
@traced_handler
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Who called (IAM principal), for the audit trail of every line this invocation logs.
    identity = (event.get("requestContext") or {}).get("identity") or {}
    logger.append_keys(caller_arn=identity.get("userArn"))
    return app.resolve(event, context)


# Init ends here: what it built is frozen (never scanned by the collector again), and collection resumes
# for what the invocations allocate.
gc.freeze()
gc.enable()
