"""Where the tracker's Klarna client sends a session's calls: the URL Klarna returned for it, and only
if it is on the configured Klarna API's scheme, host and port (else nothing is sent, not even fetched
credentials). The simulator, in memory, hands out URLs under another path than the documented one."""

from typing import Any

import pytest
import urllib3

from hpp_core.klarna import KlarnaClient, KlarnaCredentials, KlarnaNotFound, KlarnaUrlRefused, origin
from local.klarna_simulator import SESSIONS_PATH, KlarnaSimulator
from tests.support.klarna import MOVED_SESSIONS_PATH

KP = "https://api.playground.klarna.com/payments/v1/sessions/0b1d9815-165e-42e2-8867-35bc03789e00"
EMAIL = {"method": "email", "contact_information": {"email": "buyer@example.com"}}


class CountingPool(urllib3.PoolManager):
    """A pool that sends nothing and counts what it was asked to send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
        self.sent.append(url)
        raise AssertionError("nothing may be sent")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.klarna.com", "https://api.klarna.com:443"),
        ("https://API.Klarna.com:443/hpp/v1/sessions/x", "https://api.klarna.com:443"),
        ("HTTP://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
        ("http://127.0.0.1", "http://127.0.0.1:80"),
        ("ftp://api.klarna.com/x", ""),
        ("/hpp/v1/sessions/x", ""),
        ("https://api.klarna.com:99999/x", ""),
        ("https://[::1/x", ""),
    ],
)
def test_a_urls_origin_is_scheme_host_and_port_spelled_out(url: str, expected: str) -> None:
    assert origin(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://api.klarna.com.evil.example/hpp/v1/sessions/s1",
        "https://evil.example/hpp/v1/sessions/s1",
        "http://api.klarna.com/hpp/v1/sessions/s1",  # not https
        "https://api.klarna.com:8443/hpp/v1/sessions/s1",  # another port
        "https://user:pw@api.klarna.com/hpp/v1/sessions/s1",  # credentials of its own
        "https://api.klarna.com@evil.example/hpp/v1/sessions/s1",
        "not a url",
        "",
    ],
)
def test_a_url_off_the_configured_klarna_is_refused_before_anything_is_sent(url: str) -> None:
    asked_for_credentials: list[bool] = []

    def credentials() -> KlarnaCredentials:
        asked_for_credentials.append(True)
        return KlarnaCredentials(username="u", password="p")

    pool = CountingPool()
    client = KlarnaClient("https://api.klarna.com", credentials, timeout_seconds=1, pool=pool)
    calls = [
        lambda: client.read_session("s1", url=url or "x"),
        lambda: client.disable_session("s1", url=url or "x"),
        lambda: client.distribute_session("s1", EMAIL, url=url or "x"),
    ]
    for call in calls:
        with pytest.raises(KlarnaUrlRefused) as refused:
            call()
        assert "KLARNA_API_URL" in refused.value.message
        assert refused.value.log_fields()["refused_origin"] == origin(url)
    assert pool.sent == [] and asked_for_credentials == [], "no request, and the credentials never read"


def test_a_sessions_calls_go_to_the_urls_its_create_returned(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    created = klarna.create_session({"payment_session_url": KP}).session
    assert created.session_url is not None and MOVED_SESSIONS_PATH in created.session_url
    assert created.distribution_url == f"{created.session_url}/distribution"

    assert klarna.read_session(created.session_id, url=created.session_url).status == "WAITING"
    klarna.distribute_session(created.session_id, EMAIL, url=created.distribution_url)
    klarna.disable_session(created.session_id, url=created.session_url)
    assert [(r.method, r.path) for r in simulator.requests[1:]] == [
        ("GET", f"{MOVED_SESSIONS_PATH}/{created.session_id}"),
        ("POST", f"{MOVED_SESSIONS_PATH}/{created.session_id}/distribution"),
        ("DELETE", f"{MOVED_SESSIONS_PATH}/{created.session_id}"),
    ]
    # Rebuilt from the documented pattern, the URL reaches nothing at a Klarna whose URLs moved.
    with pytest.raises(KlarnaNotFound):
        klarna.read_session(created.session_id)


def test_without_a_url_on_file_the_documented_form_is_used(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    seeded = simulator.add_session()["session_id"]  # created elsewhere: the documented form
    assert klarna.read_session(seeded).session_id == seeded
    klarna.distribute_session(seeded, EMAIL)
    klarna.disable_session(seeded)
    assert [(r.method, r.path) for r in simulator.requests] == [
        ("GET", f"{SESSIONS_PATH}/{seeded}"),
        ("POST", f"{SESSIONS_PATH}/{seeded}/distribution"),
        ("DELETE", f"{SESSIONS_PATH}/{seeded}"),
    ]
