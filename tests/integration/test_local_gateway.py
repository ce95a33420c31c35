"""The local API gateway over real HTTP, with a fake function: the proxy events it builds and the answers
it gives, against API Gateway's REST proxy integration (and the callback's real sample event)."""

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from local.emulators.gateway import Gateway, Route
from local.emulators.runtime import InvokeResult
from tests.support.lambda_runtime import load_event

HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10))
ROUTES = [
    Route("prod", "POST", "/callbacks/hpp", "Callback"),
    Route("prod", "POST", "/sessions", "Sessions", authorization="AWS_IAM"),
    Route("prod", "GET", "/sessions/{session_id}", "Sessions", authorization="AWS_IAM"),
    Route("prod", "GET", "/sessions/special", "Special"),
    Route(
        "prod", "ANY", "/files/{path+}", "Files", binary_media_types=("image/*", "application/octet-stream")
    ),
]


class FakeFunctions:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.answer: InvokeResult = InvokeResult("r-1", ok=True, payload={"statusCode": 200, "body": "{}"})

    def __call__(self, function: str, event: dict[str, Any]) -> InvokeResult:
        self.events.append((function, event))
        return self.answer

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1][1]


@pytest.fixture
def functions() -> FakeFunctions:
    return FakeFunctions()


@pytest.fixture
def gateway(functions: FakeFunctions) -> Iterator[Gateway]:
    server = Gateway(ROUTES, functions)
    server.start()
    yield server
    server.stop()


def test_the_callback_event_has_the_shape_of_the_real_sample(
    gateway: Gateway, functions: FakeFunctions
) -> None:
    sample = load_event("callback/in_progress")
    response = HTTP.request(
        "POST",
        f"{gateway.url}/prod/callbacks/hpp?session_id=s-1&secret=abc",
        body=sample["body"].encode(),
        headers={"Content-Type": "application/json", "User-Agent": "Klarna-HPP/1.0"},
    )

    assert response.status == 200
    function, event = functions.events[-1]
    assert function == "Callback"
    assert set(event) == set(sample)
    assert set(event["requestContext"]) >= set(sample["requestContext"]) - {"domainPrefix"}
    assert set(event["requestContext"]["identity"]) == set(sample["requestContext"]["identity"])
    assert (event["resource"], event["path"], event["httpMethod"]) == (
        "/callbacks/hpp",
        "/callbacks/hpp",
        "POST",
    )
    assert event["queryStringParameters"] == {"session_id": "s-1", "secret": "abc"}
    assert event["body"] == sample["body"] and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert (context["stage"], context["path"], context["resourcePath"]) == (
        "prod",
        "/prod/callbacks/hpp",
        "/callbacks/hpp",
    )
    assert context["domainName"] == f"127.0.0.1:{gateway.port}"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userArn"] is None  # a public route: no caller identity
    assert event["headers"]["X-Forwarded-Proto"] == "http"
    assert response.headers["x-amzn-RequestId"] == context["requestId"]


def test_path_parameters_multi_values_and_the_most_specific_route(
    gateway: Gateway, functions: FakeFunctions
) -> None:
    HTTP.request("GET", f"{gateway.url}/prod/sessions/abc%20def?x=1&x=2&y=", headers={"X-Many": "a"})
    event = functions.last
    assert functions.events[-1][0] == "Sessions"
    assert event["pathParameters"] == {"session_id": "abc def"}
    assert event["resource"] == "/sessions/{session_id}"
    assert event["queryStringParameters"] == {"x": "2", "y": ""}  # the last value, as API Gateway gives
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}

    HTTP.request("GET", f"{gateway.url}/prod/sessions/special")
    assert functions.events[-1][0] == "Special"
    assert functions.last["pathParameters"] is None


def test_iam_routes_are_open_locally_with_a_local_caller_identity(
    gateway: Gateway, functions: FakeFunctions
) -> None:
    signed = (
        "AWS4-HMAC-SHA256 Credential=AKIALOCALTEST/20261121/eu-west-1/execute-api/aws4_request, Signature=x"
    )
    response = HTTP.request(
        "POST", f"{gateway.url}/prod/sessions", body=b"{}", headers={"Authorization": signed}
    )

    assert response.status == 200
    identity = functions.last["requestContext"]["identity"]
    assert identity["userArn"] == "arn:aws:iam::123456789012:user/local-developer"
    assert identity["accessKey"] == "AKIALOCALTEST"


def test_greedy_paths_and_binary_bodies(gateway: Gateway, functions: FakeFunctions) -> None:
    png = bytes(range(256))
    HTTP.request(
        "PUT", f"{gateway.url}/prod/files/a/b/c.png", body=png, headers={"Content-Type": "image/png"}
    )
    event = functions.last
    assert event["pathParameters"] == {"path": "a/b/c.png"}
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == png

    HTTP.request(
        "PUT", f"{gateway.url}/prod/files/x", body=b'{"a": 1}', headers={"Content-Type": "application/json"}
    )
    assert (functions.last["isBase64Encoded"], functions.last["body"]) == (False, '{"a": 1}')


def test_repeated_headers_keep_every_value(gateway: Gateway, functions: FakeFunctions) -> None:
    HTTP.request("POST", f"{gateway.url}/prod/callbacks/hpp", headers=[("X-Twice", "1"), ("X-Twice", "2")])  # type: ignore[arg-type]
    assert functions.last["headers"]["X-Twice"] == "2"
    assert functions.last["multiValueHeaders"]["X-Twice"] == ["1", "2"]


def test_the_function_answer_becomes_the_http_answer(gateway: Gateway, functions: FakeFunctions) -> None:
    functions.answer = InvokeResult(
        "r",
        ok=True,
        payload={
            "statusCode": 201,
            "headers": {"Content-Type": "application/json", "X-One": "1"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": json.dumps({"created": True}),
        },
    )
    response = HTTP.request("POST", f"{gateway.url}/prod/sessions", body=b"{}")
    assert (response.status, response.json()) == (201, {"created": True})
    assert response.headers["X-One"] == "1"
    assert response.headers.getlist("Set-Cookie") == ["a=1", "b=2"]

    functions.answer = InvokeResult(
        "r",
        ok=True,
        payload={"statusCode": 200, "body": base64.b64encode(b"\x00\x01").decode(), "isBase64Encoded": True},
    )
    assert HTTP.request("POST", f"{gateway.url}/prod/sessions").data == b"\x00\x01"


@pytest.mark.parametrize(
    "answer",
    [
        InvokeResult(
            "r", ok=False, error={"errorType": "KeyError", "errorMessage": "boom", "stackTrace": []}
        ),
        InvokeResult(
            "r", ok=False, error={"errorType": "Sandbox.Timedout", "errorMessage": "late", "stackTrace": []}
        ),
        InvokeResult("r", ok=True, payload="not a proxy response"),
        InvokeResult("r", ok=True, payload={"statusCode": "200"}),
    ],
)
def test_a_failed_or_malformed_function_answer_is_api_gateways_502(
    gateway: Gateway, functions: FakeFunctions, answer: InvokeResult
) -> None:
    functions.answer = answer
    response = HTTP.request("POST", f"{gateway.url}/prod/callbacks/hpp", body=b"{}")
    assert (response.status, response.json()) == (502, {"message": "Internal server error"})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/prod/callbacks/hpp"),
        ("POST", "/prod/nowhere"),
        ("POST", "/callbacks/hpp"),
        ("POST", "/dev/callbacks/hpp"),
    ],
)
def test_no_route_is_api_gateways_403(
    gateway: Gateway, functions: FakeFunctions, method: str, path: str
) -> None:
    response = HTTP.request(method, gateway.url + path)
    assert (response.status, response.json()) == (403, {"message": "Missing Authentication Token"})
    assert functions.events == []
