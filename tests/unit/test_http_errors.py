import json

import pytest

from hpp_core.errors import BadRequest, Forbidden, StorageUnavailable
from hpp_core.http import error_response
from hpp_core.klarna import (
    KlarnaAuthFailed,
    KlarnaBadResponse,
    KlarnaError,
    KlarnaNotFound,
    KlarnaRateLimited,
    KlarnaRejected,
    KlarnaResponse,
    KlarnaTimeout,
    KlarnaUnavailable,
    KlarnaUrlRefused,
    _error_from_response,
    retry_after_seconds,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (BadRequest("bad"), 400),
        (Forbidden("no"), 403),
        (StorageUnavailable("down"), 503),
        (KlarnaNotFound("x"), 404),
        (KlarnaRejected("x"), 400),
        (KlarnaRateLimited("x", retry_after=2.4), 503),
        (KlarnaTimeout("x"), 504),
        (KlarnaUnavailable("x"), 502),
        (KlarnaAuthFailed("x"), 502),
        (KlarnaBadResponse("x"), 502),
        (KlarnaUrlRefused("x", refused_origin="https://elsewhere.example:443"), 502),
        (RuntimeError("boom with internals"), 500),
    ],
)
def test_every_error_maps_to_one_status_with_a_json_body(error: Exception, status: int) -> None:
    got_status, body, _ = error_response(error)
    assert got_status == status
    assert set(body["error"]) >= {"code", "message"}
    assert "internals" not in json.dumps(body)


def test_klarna_details_reach_the_caller() -> None:
    error = _error_from_response(
        KlarnaResponse(
            400,
            {},
            json.dumps(
                {"error_code": "BAD_VALUE", "error_messages": ["Bad value: x"], "correlation_id": "c-1"}
            ).encode(),
        ),
        "create session",
    )
    assert isinstance(error, KlarnaRejected)
    _, body, _ = error_response(error)
    assert body["error"]["klarna"] == {
        "http_status": 400,
        "error_code": "BAD_VALUE",
        "error_messages": ["Bad value: x"],
        "correlation_id": "c-1",
    }


@pytest.mark.parametrize(
    ("payload", "messages"),
    [
        # Klarna's general error format has a single string too.
        ({"error_code": "BAD_VALUE", "error_message": "Bad value: email"}, ["Bad value: email"]),
        ({"error_code": "X", "error_messages": ["a", "b"], "error_message": "ignored"}, ["a", "b"]),
        ({"error_code": "X", "error_message": ""}, []),
        ({"error_code": "X", "error_message": 5}, []),
        ({"error_code": "X", "error_messages": "not a list", "error_message": "one"}, ["one"]),
    ],
)
def test_klarnas_error_message_string_is_read_like_its_list(payload: dict, messages: list[str]) -> None:
    error = _error_from_response(KlarnaResponse(400, {}, json.dumps(payload).encode()), "distribute session")
    assert error.error_messages == messages


def test_a_refused_url_is_its_own_code() -> None:
    status, body, _ = error_response(KlarnaUrlRefused("refused", refused_origin="https://evil.example:443"))
    assert (status, body["error"]["code"]) == (502, "klarna_url_refused")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, KlarnaNotFound),
        (401, KlarnaAuthFailed),
        (403, KlarnaAuthFailed),
        (429, KlarnaRateLimited),
        (400, KlarnaRejected),
        (500, KlarnaUnavailable),
        (503, KlarnaUnavailable),
    ],
)
def test_klarna_statuses_become_typed_errors_even_with_garbage_bodies(
    status: int, kind: type[KlarnaError]
) -> None:
    error = _error_from_response(KlarnaResponse(status, {}, b"<html>oops</html>"), "read session")
    assert type(error) is kind
    assert error.http_status == status


def test_rate_limit_answer_carries_retry_after() -> None:
    error = _error_from_response(KlarnaResponse(429, {"X-Ratelimit-Reset": "3"}, b""), "read session")
    assert isinstance(error, KlarnaRateLimited)
    assert error.retry_after == 3
    _, _, headers = error_response(error)
    assert headers == {"Retry-After": "3"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"X-Ratelimit-Reset": "0.5"}, 0.5),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        ({"Retry-After": "-1"}, None),
        ({"Retry-After": "999999"}, 3600.0),
    ],
)
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers) == expected
