"""Lambda behind the IAM-authorized sessions API: `POST /sessions`, `PUT|GET|DELETE /sessions/{id}`.

Thin on purpose: parse the API Gateway event, let the core (hpp_core.sessions) decide, map the result.
Errors become HTTP answers in hpp_core.http. Nothing here logs a request body, a callback secret or an
authorization token.
"""

from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hpp_core.dependencies import klarna_client, session_repository
from hpp_core.http import StrictRestResolver, install_error_handlers, json_response
from hpp_core.klarna import KlarnaError, RetryPolicy
from hpp_core.sessions import (
    SessionsSettings,
    callback_url,
    create_session,
    disable_session,
    parse_create_request,
    session_view,
    track_session,
    tracked_session,
)
from hpp_core.settings import load_settings

# Kept free after the last Klarna call for the DynamoDB write and the answer: with the default AWS call
# budget (settings.AwsCallSettings) one call takes at most 2 x (0.3 + 0.6) s, plus 1 s of backoff if
# DynamoDB throttles.
RESERVED_SECONDS = 3.0
MIN_KLARNA_TIMEOUT_SECONDS = 0.2

settings = load_settings(SessionsSettings)
logger = Logger()
metrics = Metrics()
app = StrictRestResolver()
install_error_handlers(app, logger, metrics)
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


@app.post("/sessions")
def create() -> Response[Any]:
    event = app.current_event
    request = parse_create_request(event.body, base64_encoded=bool(event.is_base64_encoded))
    context = event.request_context
    url = callback_url(
        settings.callback_base,
        domain_name=context.domain_name,
        stage=context.stage,
        api_id=context.api_id,
    )
    timeout = max(min(settings.klarna_timeout_seconds, _time_left()), MIN_KLARNA_TIMEOUT_SECONDS)
    result = create_session(
        request, callback_url=url, klarna=klarna, store=repository, timeout_seconds=timeout
    )
    logger.append_keys(session_id=result.session_id)
    metrics.add_metric(name="SessionCreated", unit=MetricUnit.Count, value=1)
    logger.info("session created", extra={"already_tracked": result.already_tracked})
    return json_response(HTTPStatus.CREATED, result.created.body)


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


def _log_session(session_id: str) -> None:
    # JSON logging escapes it; truncation keeps a hostile value from bloating every line.
    logger.append_keys(session_id=session_id[:128])


# clear_state: keys appended for one request (session_id, caller) must not stick to the next one's lines.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Who called (IAM principal), for the audit trail of every line this invocation logs.
    identity = (event.get("requestContext") or {}).get("identity") or {}
    logger.append_keys(caller_arn=identity.get("userArn"))
    return app.resolve(event, context)
