"""Lambda behind `POST /callbacks/hpp`: Klarna's status callbacks.

Thin on purpose: read the API Gateway event, let the core decide, map the result. Errors become HTTP
answers in hpp_core.http; nothing here logs the query string (it holds the secret) or the body.

One route, so no Powertools resolver: the event's few fields are read here (the resolver's package
imports every resolver, a fifth of this function's cold start, which Klarna's 3 seconds pay for).
"""

import gc

# No collections during init: what it builds (the SDK, Powertools, models, clients) lives as long as the
# execution environment, and collecting while it grows was a quarter of the cold start (docs/performance.md).
gc.disable()

import re
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from hpp_core.callbacks import (
    KLARNA_READ_ENDS_SECONDS,
    CallbackSettings,
    UnknownSessionEvent,
    UnknownSessionReads,
    handle_callback,
)
from hpp_core.dependencies import klarna_client, session_repository, state_repository
from hpp_core.errors import MethodNotAllowed, NotFound
from hpp_core.http import error_answers, proxy_answer
from hpp_core.klarna import NO_RETRY
from hpp_core.logs import service_logger
from hpp_core.settings import load_settings
from hpp_core.tracing import annotate_session, traced_handler

# The one route, matched in full as API Gateway matches it (trailing slashes aside, as the resolver did).
METHOD, PATH = "POST", "/callbacks/hpp"
_PATH = re.compile(rf"\A{re.escape(PATH)}/*\Z")

settings = load_settings(CallbackSettings)
logger = service_logger()
metrics = Metrics()
answer_error = error_answers(logger, metrics)
repository = session_repository(settings)
klarna = klarna_client(settings)


def _count(event: UnknownSessionEvent) -> None:
    metrics.add_metric(name=event.value, unit=MetricUnit.Count, value=1)


unknown_sessions = UnknownSessionReads(
    state_repository(settings, client=repository.client),
    per_minute=settings.unknown_session_reads_per_minute,
    report=_count,
)


def receive_callback(event: dict[str, Any]) -> dict[str, Any]:
    if not _PATH.match(str(event.get("path") or "")):
        raise NotFound("no such route")
    if event.get("httpMethod") != METHOD:
        raise MethodNotAllowed(f"only {METHOD} is allowed on {PATH}")
    klarna_retry = NO_RETRY.within(KLARNA_READ_ENDS_SECONDS)  # one attempt, over by then
    query = event.get("queryStringParameters") or {}
    # JSON logging escapes it; truncation keeps a hostile value from bloating every line.
    logger.append_keys(session_id=str(query.get("session_id", ""))[:128] or None)
    annotate_session(query.get("session_id"))
    result = handle_callback(
        query,
        event.get("body"),
        base64_encoded=bool(event.get("isBase64Encoded")),
        store=repository,
        klarna=klarna,
        unknown=unknown_sessions,
        klarna_retry=klarna_retry,
    )
    metrics.add_metric(name=f"Callback_{result.outcome}", unit=MetricUnit.Count, value=1)
    logger.info(
        "callback handled",
        extra={"outcome": result.outcome, "source": result.source, "stored_status": result.status},
    )
    return proxy_answer(200, result.response_body())


@traced_handler
@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # API Gateway's request id, read directly (Powertools' correlation_id_path runs a JMESPath query).
    request_context = event.get("requestContext")
    logger.set_correlation_id(request_context.get("requestId") if isinstance(request_context, dict) else None)
    try:
        return receive_callback(event)
    except Exception as exc:
        return proxy_answer(*answer_error(exc))


# Init ends here: what it built is frozen (never scanned by the collector again), and collection resumes
# for what the invocations allocate.
gc.freeze()
gc.enable()
