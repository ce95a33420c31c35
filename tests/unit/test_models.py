import pytest
from pydantic import ValidationError

from hpp_core.models import (
    CallbackBody,
    KlarnaSession,
    StatusUpdate,
    TrackedSession,
    describe_validation_error,
    is_session_id,
)

TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"


def session(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "session_id": "39a1c773-bafd-754d-af1f-b30c592f1267",
        "status": "COMPLETED",
        "updated_at": "2019-05-13T14:54:04.675Z",
        "expires_at": "2019-05-15T13:51:43.507Z",
        "authorization_token": TOKEN,
    }
    body.update(overrides)
    return body


def test_unknown_fields_are_ignored_and_never_kept() -> None:
    parsed = KlarnaSession.model_validate(
        session(customer={"email": "someone@example.com"}, manual_identification={"x": 1}, brand_new=True)
    )
    dumped = parsed.model_dump()
    assert "customer" not in dumped
    assert "manual_identification" not in dumped
    assert "brand_new" not in dumped


def test_a_status_klarna_adds_later_is_accepted() -> None:
    assert KlarnaSession.model_validate(session(status="PAUSED_BY_CONSUMER")).status == "PAUSED_BY_CONSUMER"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"status": 7}, "session.status"),
        ({"status": "completed; drop table"}, "session.status"),
        ({"updated_at": "yesterday"}, "session.updated_at"),
        ({"updated_at": 1557759244}, "session.updated_at"),
        ({"session_id": "../../payments/v1/authorizations"}, "session.session_id"),
        ({"session_id": ""}, "session.session_id"),
        ({"authorization_token": 12345}, "session.authorization_token"),
        ({"order_id": ["x"]}, "session.order_id"),
    ],
)
def test_wrong_types_are_rejected_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CallbackBody.model_validate({"event_id": "e1", "session": session(**overrides)})
    lines = describe_validation_error(caught.value)
    assert any(line.startswith(f"{field}:") for line in lines), lines


def test_error_descriptions_never_echo_the_input() -> None:
    with pytest.raises(ValidationError) as caught:
        CallbackBody.model_validate({"session": session(status=TOKEN, updated_at=TOKEN)})
    assert TOKEN not in " ".join(describe_validation_error(caught.value))


def test_the_token_never_shows_in_repr_or_str() -> None:
    update = StatusUpdate(session=KlarnaSession.model_validate(session()), source="callback", event_id="e1")
    for text in (repr(update), str(update), repr(update.session), str(update.session.model_dump())):
        assert TOKEN not in text
    assert update.session.authorization_token is not None
    assert update.session.authorization_token.get_secret_value() == TOKEN


def test_status_update_exposes_normalised_times() -> None:
    update = StatusUpdate(
        session=KlarnaSession.model_validate(session(updated_at="2019-05-13T16:54:04+02:00")), source="poller"
    )
    assert update.updated_at == "2019-05-13T14:54:04.000Z"
    assert update.updated_at_ms == 1557759244000
    assert update.is_final


@pytest.mark.parametrize("value", ["abc\n", "a/b", "", "x" * 129, "a b", "a.b", "é"])
def test_an_id_from_a_url_is_checked_as_strictly_as_a_models(value: str) -> None:
    assert not is_session_id(value)
    with pytest.raises(ValidationError):
        KlarnaSession.model_validate(session(session_id=value))


def test_a_tracked_sessions_dump_never_holds_its_secret_hash_or_ordering_key() -> None:
    tracked = TrackedSession.model_validate(
        {
            "session_id": "s1",
            "status": "WAITING",
            "updated_at": "2019-05-13T16:54:04+02:00",
            "updated_at_ms": 0,
            "callback_secret_hash": "f" * 64,
        }
    )
    assert tracked.model_dump(mode="json") == {
        "session_id": "s1",
        "status": "WAITING",
        "updated_at": "2019-05-13T14:54:04.000Z",
        "expires_at": None,
        "authorization_token": None,
        "order_id": None,
        "klarna_reference": None,
        "session_url": None,
        "last_event_id": None,
        "last_source": None,
        "recorded_at": None,
        "redirect_url": None,
        "qr_code_url": None,
        "distribution_url": None,
        "manual_identification_check_url": None,
        "distribution_module": None,
    }
    assert "f" * 64 not in repr(tracked)
    assert tracked.accepts_callback_secret("f" * 64)
    assert not tracked.accepts_callback_secret("e" * 64)
