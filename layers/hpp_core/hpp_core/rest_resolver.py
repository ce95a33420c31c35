"""Powertools' REST resolver for the sessions API, its routes matched strictly and its errors answered
by hpp_core.http's one mapping."""

import re
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types

from hpp_core.http import ErrorAnswer, error_answers


class StrictRestResolver(APIGatewayRestResolver):
    """Powertools' REST resolver with every route matched in full, as API Gateway matches its resources.

    Powertools ends a route's pattern with `$`, which also matches before a final newline, and lets a
    `<param>` stop short of one: `/sessions/<id>\\n` was routed as `/sessions/<id>`, so a DELETE with a
    trailing `%0A` disabled the real session. Here a `<param>` is one whole path segment, whatever it
    holds (as `{param}` is on API Gateway), and the pattern must reach the end of the path: the handler
    then gets the value as sent, and refuses it (400) when it is no session id.
    """

    @staticmethod
    def _compile_regex(rule: str, base_regex: str = "") -> re.Pattern[str]:
        segments = re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", rule)
        return re.compile(rf"\A{segments}/*\Z")


def install_error_handlers(
    app: APIGatewayRestResolver, logger: Logger, metrics: Metrics
) -> Callable[[Exception], ErrorAnswer]:
    """Register the one mapping (hpp_core.http) on a Powertools resolver.

    Returns the same mapping (logged and counted) for a handler that answers a failure itself, e.g. an
    idempotent create that must remember the answer.
    """
    answer = error_answers(logger, metrics)

    @app.exception_handler(Exception)
    def _handle(exc: Exception) -> Response[Any]:
        return json_response(*answer(exc))

    return answer


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers=headers or {},
    )


__all__ = ["StrictRestResolver", "install_error_handlers", "json_response"]
