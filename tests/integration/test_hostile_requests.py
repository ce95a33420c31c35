"""Every route's handler under hostile input (hypothesis): garbage bodies, queries, paths and headers,
base64 flags that lie, ids with newlines, NaN and deep nesting, dates that overflow. Whatever comes in:
never a 5xx, the sessions table exactly as it was, and Klarna asked nothing but a session by a valid id
(`/hpp/v1/sessions/<id>`) or, for a create body the tracker finds valid, to judge it.

The functions run as Lambda runs them (imported under their environment, real API Gateway events) on
DynamoDB Local, with the Klarna simulator over HTTP and the credentials in moto's Secrets Manager. One
session is tracked the way a real one is (its secret on file, Klarna's own state recorded), so requests
that name it, with or without its secret, reach the deepest paths; reading it again from Klarna is a
duplicate, so a correct answer changes nothing.
"""

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.models import StatusUpdate, is_session_id
from hpp_core.repository import SessionRepository
from local.klarna_simulator import KlarnaSimulator
from tests.support.dynamodb_items import from_item
from tests.support.functions import import_function, tracker_environment
from tests.support.lambda_runtime import LambdaContext, load_event

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
SECRET = "sample-secret-not-real-8a3f2c91d4e7b6a5"  # the secret in events/callback/*.json
KLARNA_SESSIONS = "/hpp/v1/sessions/"
EXAMPLES = settings(max_examples=120, deadline=None)


@dataclass
class Tracker:
    callback: ModuleType
    sessions: ModuleType
    dynamodb: Any
    table: str
    klarna: KlarnaSimulator
    seeded: list[dict[str, Any]]

    def table_contents(self) -> list[dict[str, Any]]:
        items = self.dynamodb.scan(TableName=self.table, ConsistentRead=True)["Items"]
        return sorted((from_item(item) for item in items), key=lambda item: str(item["session_id"]))

    def answer(self, module: ModuleType, event: dict[str, Any]) -> int:
        """Invoke, then check what every hostile request must leave behind; the status it got."""
        self.klarna.clear_requests()
        response = module.lambda_handler(event, LambdaContext(timeout_seconds=20))
        status = int(response["statusCode"])
        assert status < 500, response.get("body")
        assert self.table_contents() == self.seeded, "the sessions table changed"
        for request in self.klarna.requests:
            # A create body the tracker finds valid goes to Klarna, which judges it (and has refused
            # every one so far: the table is unchanged); anything else names one session by a valid id.
            if (request.method, request.path) == ("POST", KLARNA_SESSIONS.rstrip("/")):
                continue
            assert request.method in {"GET", "DELETE"}, (request.method, request.path)
            assert request.path.startswith(KLARNA_SESSIONS), request.path
            assert is_session_id(request.path.removeprefix(KLARNA_SESSIONS)), request.path
        return status


@pytest.fixture(scope="module")
def tracker(dynamodb_local: Any, moto_server: Any) -> Iterator[Tracker]:
    with (
        pytest.MonkeyPatch.context() as patch,
        tracker_environment(
            patch,
            dynamodb_endpoint_url=dynamodb_local.endpoint_url,
            moto_endpoint_url=moto_server.endpoint_url,
            service="hpp-hostile",
        ) as environment,
    ):
        # No TTL (the sample dates are old); a budget no example can spend, so answers are the route's own.
        patch.setenv("SESSION_RETENTION_DAYS", "0")
        patch.setenv("UNKNOWN_SESSION_READS_PER_MINUTE", "12000")
        patch.delenv("CALLBACK_BASE_URL", raising=False)
        repository = SessionRepository(environment.table, environment.dynamodb, retention_days=0)
        repository.create_session(
            SID, expires_at=None, session_url=None, callback_secret_hash=hash_callback_secret(SECRET)
        )
        klarna = environment.klarna
        klarna.add_session(SID, status="IN_PROGRESS")
        observed = StatusUpdate.model_validate({"session": klarna.read_body(SID), "source": "klarna_read"})
        repository.record_status(observed)
        tracker = Tracker(
            import_function("callback"),
            import_function("sessions"),
            environment.dynamodb,
            environment.table,
            klarna,
            seeded=[],
        )
        tracker.seeded = tracker.table_contents()
        yield tracker
        assert klarna.errors == [], "the simulated Klarna itself failed"


# -- what hostile input looks like --------------------------------------------------------------------

# Text of every kind, lone surrogates and control characters included.
text = st.text(st.characters(exclude_categories=()), max_size=60) | st.sampled_from(
    ["\ud800", "\udfff\x00", "\n", "\r\n", "%0A", "%00", "..", "../..", "\u202e", "a" * 5000]
)
session_ids = st.one_of(
    st.sampled_from([SID, SID + "\n", SID + "\r\n", SID + "%0A", SID + " ", SID.upper(), f"../{SID}", ""]),
    st.uuids().map(str),
    st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9_-]{129,140}", fullmatch=True),
    text,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=15,
)
# Dates that overflow, fall outside the range, are no dates, or are older than what is stored: never
# one that would make a genuine update of the tracked session.
dates: st.SearchStrategy[Any] = st.sampled_from(
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1969-12-31T23:59:59Z", "3000-01-01T00:00:00Z",
     "2019-05-13T14:52:10.120Z", "yesterday", "", 1557759244, None, [], {}]
)  # fmt: skip
statuses = st.sampled_from(["IN_PROGRESS", "COMPLETED", "DISABLED", "paused", "", "X" * 70, 7, None]) | text
callback_sessions = st.fixed_dictionaries(
    {"session_id": session_ids, "status": statuses, "updated_at": dates},
    optional={"expires_at": dates, "authorization_token": json_values, "order_id": json_values},
)
callback_bodies = st.fixed_dictionaries({"session": callback_sessions}, optional={"event_id": json_values})
create_bodies = st.dictionaries(
    st.sampled_from(["payment_session_url", "merchant_urls", "options", "profile_id"]) | text,
    st.sampled_from(["http://pay.example/s", "https://", "https://pay.example/s\n", "javascript:x", "NaN"])
    | json_values,
    max_size=5,
)
raw_json = st.sampled_from(
    ['{"a": NaN}', '{"a": Infinity}', "[-Infinity]", "1e400", '{"a": "\\ud800"}', "[" * 40 + "]" * 40,
     "[" * 30_000 + "]" * 30_000, '{"session": ' * 50 + "{}" + "}" * 50, "\ufeff{}", "null", "0", '"x"']
)  # fmt: skip
bodies = st.one_of(
    st.none(),
    text,
    st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")),
    raw_json,
    json_values.map(json.dumps),
    callback_bodies.map(json.dumps),
    create_bodies.map(json.dumps),
)
headers = st.dictionaries(
    st.sampled_from(["Content-Type", "Content-Length", "Idempotency-Key", "Host", "X-Forwarded-For"]) | text,
    st.sampled_from(["application/json", "text/plain", "application/octet-stream", "-1", ""]) | text,
    max_size=5,
)


@st.composite
def queries(draw: st.DrawFn) -> dict[str, str]:
    query = draw(st.dictionaries(st.sampled_from(["session_id", "secret"]) | text, text, max_size=4))
    if draw(st.booleans()):
        query["session_id"] = draw(session_ids)
    if draw(st.booleans()):
        query["secret"] = draw(st.sampled_from([SECRET, SECRET + "\n", "a-guess", "", "x" * 300]) | text)
    return query


def hostile(
    event: dict[str, Any], *, body: str | None, base64_encoded: bool, query: dict[str, str] | None, head: Any
) -> dict[str, Any]:
    """`event` with the hostile parts in place, shaped as API Gateway shapes them."""
    if base64_encoded and body is not None and body.isascii() and len(body) % 3 == 0:
        body = base64.b64encode(body.encode()).decode()  # sometimes a real encoding, sometimes a lie
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    event["headers"] = head or None
    event["multiValueHeaders"] = {k: [v] for k, v in head.items()} if head else None
    return event


# -- the properties -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "sample"), [("callback", "callback/in_progress"), ("sessions", "sessions/create")]
)
@EXAMPLES
@given(body=bodies, base64_encoded=st.booleans(), query=queries(), head=headers)
def test_any_callback_or_create_is_answered_without_a_5xx_and_changes_nothing(
    tracker: Tracker,
    function: str,
    sample: str,
    body: str | None,
    base64_encoded: bool,
    query: dict[str, str],
    head: Any,
) -> None:
    event = hostile(load_event(sample), body=body, base64_encoded=base64_encoded, query=query, head=head)
    tracker.answer(getattr(tracker, function), event)


@EXAMPLES
@given(
    method=st.sampled_from(["PUT", "GET", "DELETE"]),
    segment=session_ids,
    body=bodies,
    base64_encoded=st.booleans(),
    query=queries(),
    head=headers,
)
def test_any_request_for_one_session_is_answered_without_a_5xx_and_changes_nothing(
    tracker: Tracker,
    method: str,
    segment: str,
    body: str | None,
    base64_encoded: bool,
    query: dict[str, str],
    head: Any,
) -> None:
    assume(not (method == "DELETE" and segment == SID))  # disabling the tracked session is no hostile act
    sample = {"PUT": "sessions/track", "GET": "sessions/read", "DELETE": "sessions/disable"}[method]
    event = hostile(load_event(sample), body=body, base64_encoded=base64_encoded, query=query, head=head)
    event["path"] = f"/sessions/{segment}"
    event["pathParameters"] = {"session_id": segment}
    status = tracker.answer(tracker.sessions, event)
    if not is_session_id(segment):
        assert status in {400, 403, 404}  # 404: a segment with a slash in it is no route


@EXAMPLES
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=st.one_of(
        st.sampled_from(
            ["/", "/sessions/", "/callbacks/hpp\n", "/callbacks/hpp/x", "//sessions", "/Sessions"]
        ),
        text.map(lambda value: "/" + value),
        st.builds(lambda a, b: f"/sessions/{a}/{b}", session_ids, text),
    ),
    body=bodies,
    head=headers,
)
def test_any_path_on_either_function_is_answered_without_a_5xx_and_changes_nothing(
    tracker: Tracker, method: str, path: str, body: str | None, head: Any
) -> None:
    # `/sessions/<SID>/` is the tracked session's own route (trailing slashes match, as on API Gateway).
    assume(not (method == "DELETE" and path.rstrip("/") == f"/sessions/{SID}"))
    for module, sample in ((tracker.callback, "callback/in_progress"), (tracker.sessions, "sessions/read")):
        event = hostile(load_event(sample), body=body, base64_encoded=False, query={}, head=head)
        event["httpMethod"] = method
        event["path"] = path
        tracker.answer(module, event)


def test_the_tracked_session_is_reachable_so_the_properties_reach_the_deep_paths(tracker: Tracker) -> None:
    # Its own callback with an empty body is settled by a Klarna read that changes nothing.
    event = hostile(
        load_event("callback/in_progress"),
        body="",
        base64_encoded=False,
        query={"session_id": SID, "secret": SECRET},
        head={},
    )
    assert tracker.answer(tracker.callback, event) == 200
    assert [(r.method, r.path) for r in tracker.klarna.requests] == [("GET", KLARNA_SESSIONS + SID)]
