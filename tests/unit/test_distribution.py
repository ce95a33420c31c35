"""Sending the payment link (`POST /sessions/{id}/distribution`): the body is checked without ever
echoing the contact data, a final session is refused without asking Klarna, Klarna's answers are mapped,
and a Klarna refusal because the merchant disabled the session is told apart by reading it back. The
shared in-memory store and the Klarna simulator, in memory."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpp_core.errors import BadRequest, Conflict, NotFound
from hpp_core.http import error_response
from hpp_core.klarna import KlarnaClient, KlarnaNotFound, KlarnaRejected, KlarnaUnavailable
from hpp_core.models import KlarnaSession, StatusUpdate
from hpp_core.sessions import (
    CreateSessionRequest,
    DistributionRequest,
    create_session,
    distribute_session,
    parse_distribution_request,
)
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import MOVED_SESSIONS_PATH
from tests.support.memory_store import MemorySessionStore

KP = "https://api.playground.klarna.com/payments/v1/sessions/0b1d9815-165e-42e2-8867-35bc03789e00"
CALLBACK = "https://abc.execute-api.eu-west-1.amazonaws.com/prod/callbacks/hpp"
EMAIL_ADDRESS = "anna.andersson@example.com"
PHONE = "+46701740633"
EMAIL = {"method": "email", "contact_information": {"email": EMAIL_ADDRESS}}
SMS = {"method": "sms", "contact_information": {"phone": PHONE, "phone_country": "SE"}}


def parsed(body: Any) -> DistributionRequest:
    return parse_distribution_request(json.dumps(body))


def tracked(klarna: KlarnaClient) -> tuple[MemorySessionStore, str]:
    """A store tracking one session created through the tracker (its URLs and links on file)."""
    store = MemorySessionStore()
    request = CreateSessionRequest.model_validate({"payment_session_url": KP})
    return store, create_session(request, callback_url=CALLBACK, klarna=klarna, store=store).session_id


# -- the body -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        EMAIL,
        SMS,
        {**EMAIL, "template": "INSTORE_PURCHASE"},
        {"method": "sms", "contact_information": {"phone": "070-174 06 33", "phone_country": "SE"}},
    ],
)
def test_a_valid_body_goes_to_klarna_as_it_came(body: dict[str, Any]) -> None:
    assert parsed(body).klarna_body() == body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"method": "fax", "contact_information": {"email": EMAIL_ADDRESS}}, "method"),
        ({"method": ["email"], "contact_information": {"email": EMAIL_ADDRESS}}, "method"),
        ({"contact_information": {"email": EMAIL_ADDRESS}}, "method"),
        ({"method": "token", "contact_information": {"access_id": "a-1"}}, "method"),
        ({"method": "email"}, "contact_information"),
        (
            {"method": "email", "contact_information": {"email": "anna.andersson"}},
            "contact_information.email",
        ),
        (
            {"method": "email", "contact_information": {"email": "anna @example.com"}},
            "contact_information.email",
        ),
        (
            {"method": "email", "contact_information": {"phone": PHONE, "phone_country": "SE"}},
            "contact_information",
        ),
        ({"method": "email", "contact_information": {"email": EMAIL_ADDRESS, "name": "Anna"}}, "name"),
        ({"method": "sms", "contact_information": {"phone": PHONE}}, "contact_information.phone_country"),
        (
            {"method": "sms", "contact_information": {"phone": PHONE, "phone_country": "Sweden"}},
            "phone_country",
        ),
        ({"method": "sms", "contact_information": {"phone": PHONE, "phone_country": "se"}}, "phone_country"),
        ({"method": "sms", "contact_information": {"phone": "call me", "phone_country": "SE"}}, "phone"),
        ({"method": "sms", "contact_information": {"email": EMAIL_ADDRESS}}, "contact_information"),
        ({**EMAIL, "recipient": EMAIL_ADDRESS}, "recipient"),
    ],
)
def test_an_invalid_body_is_400_naming_the_field_and_never_the_contact_data(
    body: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        parsed(body)
    status, answer, _ = error_response(raised.value)
    assert status == 400
    assert any(field in line for line in raised.value.details), raised.value.details
    text = json.dumps(answer)
    for contact in (EMAIL_ADDRESS, PHONE, "anna.andersson", "Sweden", "call me", "Anna"):
        assert contact not in text


@pytest.mark.parametrize("raw", ["", "   ", "not json", "[]", '"email"', "null"])
def test_a_body_that_is_no_distribution_request_is_400(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_distribution_request(raw)


# Contact data is marked, so the test can look for any of it in the answer.
_CONTACT_TEXT = st.text(max_size=30).map(lambda text: f"PII-{text}")
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _CONTACT_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(
    method=st.sampled_from(["email", "sms", "token", "fax", ""]) | _JSON,
    contact=st.dictionaries(
        st.sampled_from(["email", "phone", "phone_country", "name"]) | st.text(max_size=8), _JSON
    ),
    extra=st.dictionaries(st.text(max_size=8), _JSON, max_size=2),
)
def test_whatever_the_body_holds_an_error_never_echoes_a_value_of_it(
    method: Any, contact: dict[str, Any], extra: dict[str, Any]
) -> None:
    body = {**extra, "method": method, "contact_information": contact}
    try:
        parsed(body)
    except BadRequest as refused:
        assert "PII-" not in json.dumps(error_response(refused)[1])


# -- the operation ------------------------------------------------------------------------------------


def test_the_link_goes_to_the_sessions_distribution_url_with_the_merchants_body(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store, session_id = tracked(klarna)
    distribute_session(session_id, parsed(SMS), klarna=klarna, store=store)
    (sent,) = simulator.requests_to("POST", f"{MOVED_SESSIONS_PATH}/{session_id}/distribution")
    assert sent.json == SMS
    assert simulator.session_truth(session_id)["distributions"][0]["method"] == "sms"
    stored = store.get_session(session_id)
    assert stored is not None and PHONE not in stored.model_dump_json(), "contact data is never stored"


def test_a_session_the_tracker_does_not_track_is_404_without_asking_klarna(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    with pytest.raises(NotFound, match="not tracked"):
        distribute_session(
            "6a1b0f5e-0000-4c1d-9e8f-000000000404", parsed(EMAIL), klarna=klarna, store=MemorySessionStore()
        )
    assert simulator.requests == []


@pytest.mark.parametrize("final", ["COMPLETED", "CANCELLED", "DISABLED"])
def test_a_session_final_in_the_table_is_409_without_asking_klarna(
    final: str, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store, session_id = tracked(klarna)
    simulator.act(session_id, final, callback=False)
    store.record_status(
        StatusUpdate(session=KlarnaSession.model_validate(simulator.read_body(session_id)), source="callback")
    )
    simulator.clear_requests()
    with pytest.raises(Conflict, match=final):
        distribute_session(session_id, parsed(EMAIL), klarna=klarna, store=store)
    assert simulator.requests == []


def test_klarnas_400_for_a_session_the_merchant_disabled_is_409_and_disabled_is_recorded(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store, session_id = tracked(klarna)
    klarna.disable_session(session_id, url=simulator.session_url(session_id))  # at Klarna, not through us
    with pytest.raises(Conflict, match="DISABLED") as raised:
        distribute_session(session_id, parsed(EMAIL), klarna=klarna, store=store)
    stored = store.get_session(session_id)
    assert stored is not None and stored.status == "DISABLED"
    klarna_details = error_response(raised.value)[1]["error"]["klarna"]
    assert klarna_details["http_status"] == 400 and "error_messages" not in klarna_details


def test_klarnas_400_for_a_field_is_klarnas_400_without_its_messages(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store, session_id = tracked(klarna)
    quoting = {
        "error_code": "BAD_VALUE",
        "error_messages": [f"Bad value: {EMAIL_ADDRESS}"],
        "correlation_id": "c-7",
    }
    simulator.fail_next("POST", None, status=400, body=quoting)
    with pytest.raises(KlarnaRejected) as raised:
        distribute_session(session_id, parsed(EMAIL), klarna=klarna, store=store)
    status, body, _ = error_response(raised.value)
    assert (status, body["error"]["code"]) == (400, "klarna_rejected")
    assert body["error"]["klarna"] == {"http_status": 400, "error_code": "BAD_VALUE", "correlation_id": "c-7"}
    assert EMAIL_ADDRESS not in json.dumps(body)
    stored = store.get_session(session_id)
    assert stored is not None and stored.status == "WAITING"


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        ({"status": 404}, KlarnaNotFound, 404),
        ({"status": 503, "body": {"error_message": f"no mail to {EMAIL_ADDRESS}"}}, KlarnaUnavailable, 502),
        ({"disconnect": True}, KlarnaUnavailable, 502),
    ],
)
def test_klarnas_other_failures_are_mapped_like_every_route_and_never_retried(
    fault: dict[str, Any],
    kind: type[Exception],
    status: int,
    simulator: KlarnaSimulator,
    klarna: KlarnaClient,
) -> None:
    store, session_id = tracked(klarna)
    simulator.clear_requests()
    simulator.fail_next("POST", None, **fault)
    with pytest.raises(kind) as raised:
        distribute_session(session_id, parsed(EMAIL), klarna=klarna, store=store)
    answer_status, body, _ = error_response(raised.value)
    assert answer_status == status
    assert EMAIL_ADDRESS not in json.dumps(body)
    assert [r.method for r in simulator.requests] == ["POST"], "sent once: a retry could send a second e-mail"
