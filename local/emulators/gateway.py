"""The local API Gateway: HTTP requests in, API Gateway REST proxy events to the functions, their answers out.

Routes are the template's `Api` events. URLs look like the real ones without the host:
`http://127.0.0.1:PORT/{stage}/{path}`. Events carry what a Lambda proxy integration gets: `resource`,
`path`, `httpMethod`, `headers` / `multiValueHeaders`, `queryStringParameters` /
`multiValueQueryStringParameters`, `pathParameters` from `{name}` / `{name+}` templates, a
`requestContext` (stage, domainName, resourcePath, identity, requestId, ...) and the body, base64-encoded
when its Content-Type is one of the API's BinaryMediaTypes.

Authorization is NOT enforced: routes that are AWS_IAM-authorized on AWS are open here (the identity in the
event names a local caller). Answers follow API Gateway's: the function's `statusCode` / headers / body;
502 `{"message": "Internal server error"}` when the function fails or answers something that is not a proxy
response; 403 `{"message": "Missing Authentication Token"}` for a path or method no route has.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatch
from typing import Any, Self
from urllib.parse import unquote

from local.common.httpserver import HttpServer, Request, Response
from local.emulators.runtime import InvokeResult

_log = logging.getLogger("local.emulators.gateway")
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
LOCAL_CALLER_ARN = "arn:aws:iam::{account}:user/local-developer"
_SIGV4_CREDENTIAL = re.compile(r"Credential=([A-Z0-9]+)/")


@dataclass(frozen=True)
class Route:
    stage: str
    method: str  # upper case, or "ANY"
    path: str  # the resource path template, e.g. /sessions/{session_id}
    function: str  # logical id of the function
    authorization: str = "NONE"  # "AWS_IAM" on AWS; open here
    api_id: str = "local"
    binary_media_types: tuple[str, ...] = ()

    @property
    def _segments(self) -> list[str]:
        return [segment for segment in self.path.split("/") if segment]

    def specificity(self) -> tuple[int, int, int]:
        """API Gateway prefers literal segments over {params}, and {param+} last."""
        segments = self._segments
        literal = sum(1 for s in segments if not s.startswith("{"))
        greedy = any(s.endswith("+}") for s in segments)
        return (0 if greedy else 1, literal, len(segments))

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters if `path` (without the stage) fits this route's template, else None."""
        parts = [part for part in path.split("/") if part]
        parameters: dict[str, str] = {}
        for index, segment in enumerate(self._segments):
            if segment.startswith("{") and segment.endswith("+}"):  # greedy: the rest of the path
                rest = parts[index:]
                parameters[segment[1:-2]] = unquote("/".join(rest))
                return parameters if rest else None
            if index >= len(parts) or not _segment_matches(segment, parts[index], parameters):
                return None
        return parameters if len(parts) == len(self._segments) else None


def _segment_matches(segment: str, part: str, parameters: dict[str, str]) -> bool:
    """Whether one path segment fits the template's; a `{name}` segment fits any, and is recorded."""
    if segment.startswith("{") and segment.endswith("}"):
        parameters[segment[1:-1]] = unquote(part)
        return True
    return segment == part


type Invoker = Callable[[str, dict[str, Any]], InvokeResult]


class Gateway:
    def __init__(
        self,
        routes: Sequence[Route],
        invoke: Invoker,
        *,
        port: int = 0,
        region: str = "eu-west-1",
        account: str = "123456789012",
    ) -> None:
        self.routes = sorted(routes, key=lambda route: route.specificity(), reverse=True)
        self._invoke = invoke
        self._region = region
        self._account = account
        self._server = HttpServer(self._handle, port=port, name="gateway")

    def start(self) -> Self:
        self._server.start()
        for route in self.routes:
            auth = (
                "open locally (AWS_IAM on AWS)" if route.authorization == "AWS_IAM" else route.authorization
            )
            _log.info(
                "%-6s %s/%s%s → %s [%s]",
                route.method,
                self.url,
                route.stage,
                route.path,
                route.function,
                auth,
            )
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    def stage_url(self, stage: str) -> str:
        return f"{self.url}/{stage}"

    # -- requests --------------------------------------------------------------------------------

    def _find(self, method: str, stage: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            if route.stage != stage or route.method not in (method, "ANY"):
                continue
            parameters = route.match(path)
            if parameters is not None:
                return route, parameters
        return None

    def _handle(self, request: Request) -> Response:
        started = time.monotonic()
        stage, _, rest = request.path.lstrip("/").partition("/")
        path = "/" + rest
        found = self._find(request.method, stage, path)
        if found is None:
            _log.info("%s %s → 403 (no route)", request.method, request.path)
            return Response.json(403, {"message": "Missing Authentication Token"})
        route, parameters = found
        if len(request.body) > MAX_BODY_BYTES:
            return Response.json(413, {"message": "Request Too Long"})
        event = self.event(request, route, stage, path, parameters)
        result = self._invoke(route.function, event)
        response = _proxy_response(result)
        _log.info(
            "%s %s → %s %d (%d ms)",
            request.method,
            request.path,  # never the query string: the callback's secret is in it
            route.function,
            response.status,
            (time.monotonic() - started) * 1000,
        )
        response.headers.append(("x-amzn-RequestId", event["requestContext"]["requestId"]))
        return response

    def event(
        self, request: Request, route: Route, stage: str, path: str, parameters: dict[str, str]
    ) -> dict[str, Any]:
        """The API Gateway REST proxy event for this request."""
        host = request.header("Host") or f"127.0.0.1:{self.port}"
        headers, multi_headers = _single_and_multi(_forwarded_headers(request, host))
        query, multi_query = _single_and_multi(request.query_pairs())
        binary = bool(request.body) and any(
            fnmatch(_media_type(request), media_type.lower()) for media_type in route.binary_media_types
        )
        return {
            "resource": route.path,
            "path": unquote(path),
            "httpMethod": request.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": parameters or None,
            "stageVariables": None,
            "requestContext": self._request_context(request, route, stage, path, host),
            "body": _event_body(request.body, binary=binary),
            "isBase64Encoded": binary,
        }

    def _request_context(
        self, request: Request, route: Route, stage: str, path: str, host: str
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "resourceId": hashlib.sha256(route.path.encode()).hexdigest()[:6],
            "resourcePath": route.path,
            "httpMethod": request.method,
            "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:12]).decode(),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{stage}{path}",
            "accountId": self._account,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": host.split(":", maxsplit=1)[0].split(".", maxsplit=1)[0],
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": self._identity(request, route),
            "domainName": host,
            "apiId": route.api_id,
        }

    def _identity(self, request: Request, route: Route) -> dict[str, Any]:
        identity: dict[str, Any] = {
            key: None
            for key in (
                "cognitoIdentityPoolId",
                "accountId",
                "cognitoIdentityId",
                "caller",
                "principalOrgId",
                "accessKey",
                "cognitoAuthenticationType",
                "cognitoAuthenticationProvider",
                "userArn",
                "user",
            )
        }
        identity["sourceIp"] = request.client_ip
        identity["userAgent"] = request.header("User-Agent")
        if route.authorization == "AWS_IAM":
            # Not verified locally: whoever calls is taken as a local developer of this account.
            signed_with = _SIGV4_CREDENTIAL.search(request.header("Authorization") or "")
            identity.update(
                accountId=self._account,
                caller="AIDALOCALDEVELOPER",
                user="AIDALOCALDEVELOPER",
                userArn=LOCAL_CALLER_ARN.format(account=self._account),
                accessKey=signed_with.group(1) if signed_with else None,
            )
        return identity


def _forwarded_headers(request: Request, host: str) -> list[tuple[str, str]]:
    """The request's headers plus API Gateway's: X-Forwarded-For (the caller appended), -Port, -Proto."""
    forwarded_for = request.header("X-Forwarded-For")
    headers = [(name, value) for name, value in request.headers if name.lower() != "x-forwarded-for"]
    return [
        *headers,
        ("X-Forwarded-For", f"{forwarded_for}, {request.client_ip}" if forwarded_for else request.client_ip),
        ("X-Forwarded-Port", host.rpartition(":")[2] if ":" in host else "80"),
        ("X-Forwarded-Proto", "http"),
    ]


def _single_and_multi(
    pairs: Iterable[tuple[str, str]],
) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    """API Gateway's two views of repeated names: the last value of each, and all of them (None if none)."""
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    if not multi:
        return None, None
    return {name: values[-1] for name, values in multi.items()}, multi


def _media_type(request: Request) -> str:
    return (request.header("Content-Type") or "").split(";")[0].strip().lower()


def _event_body(body: bytes, *, binary: bool) -> str | None:
    if not body:
        return None
    return base64.b64encode(body).decode() if binary else body.decode("utf-8", errors="replace")


_INTERNAL_ERROR = {"message": "Internal server error"}


def _proxy_response(result: InvokeResult) -> Response:
    """What API Gateway answers for a Lambda proxy integration's result."""
    if not result.ok:
        return Response.json(502, _INTERNAL_ERROR, [("x-amzn-ErrorType", "InternalServerErrorException")])
    payload = result.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("statusCode", 200), int):
        _log.warning("malformed Lambda proxy response: %.200s", json.dumps(payload))
        return Response.json(502, _INTERNAL_ERROR)
    try:
        body = _response_body(payload)
    except ValueError:
        return Response.json(502, _INTERNAL_ERROR)
    return Response(int(payload.get("statusCode", 200)), body, _response_headers(payload))


def _response_headers(payload: dict[str, Any]) -> list[tuple[str, str]]:
    """`headers` and `multiValueHeaders` merged (a pair given in both once), JSON unless a type is named."""
    headers = [(name, str(value)) for name, value in (payload.get("headers") or {}).items()]
    for name, values in (payload.get("multiValueHeaders") or {}).items():
        headers += [(name, str(value)) for value in values if (name, str(value)) not in headers]
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return headers


def _response_body(payload: dict[str, Any]) -> bytes:
    """The body as bytes; ValueError when `isBase64Encoded` is set and it is not base64."""
    body = payload.get("body") or ""
    return base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
