"""The Klarna the tests talk to: the simulator (local/klarna_simulator, the project's one fake Klarna)
set up as tests need it, and the tracker's own KlarnaClient pointed at it.

Tests get manual journeys (a session moves only when the test says so: `act`, `add_session`),
Klarna's real 47-hour session lifetime, and a Klarna whose Create Session hands out API URLs under
another path than the documented one (MOVED_SESSIONS_PATH; Klarna: "the structure of the URLs may
change"), so every test that creates a session proves the tracker uses the URLs it was given. They
script faults and read the request log on the simulator itself. Integration tests start it (real HTTP
on 127.0.0.1); unit tests do not, and talk to it through its in-process pool: the same Klarna, without
a socket.
"""

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import urllib3

from hpp_core.klarna import KlarnaClient, KlarnaCredentials
from local.klarna_simulator import KlarnaSimulator, SimulatorConfig
from local.klarna_simulator.scripting import RecordedRequest

KLARNA_SESSION_LIFETIME = timedelta(hours=47)  # a KP session lives ~48 h; its HPP session 1 h less
# Where the test Klarna's created sessions live (seeded ones, "created elsewhere", keep the documented form).
MOVED_SESSIONS_PATH = "/hpp/moved/sessions"
# The URLs in Create Session's answer that the tracker keeps with the session and GET returns.
KEPT_URLS = (
    "session_url",
    "redirect_url",
    "qr_code_url",
    "distribution_url",
    "manual_identification_check_url",
)
TEST_KLARNA = SimulatorConfig(
    journeys="manual",
    session_lifetime=KLARNA_SESSION_LIFETIME.total_seconds(),
    session_url_path=MOVED_SESSIONS_PATH,
)


def simulated_klarna(*, clock: Callable[[], datetime] | None = None, **config: Any) -> KlarnaSimulator:
    """A simulator configured for tests (not started: use it in a `with`, or in-process)."""
    return KlarnaSimulator(replace(TEST_KLARNA, **config), clock=clock)


def klarna_client(
    simulator: KlarnaSimulator,
    *,
    password: str | None = None,
    timeout: float = 1.0,
    pool: urllib3.PoolManager | None = None,
) -> KlarnaClient:
    """The tracker's client for this simulator, with its credentials (or a wrong `password`)."""
    credentials = KlarnaCredentials(
        username=simulator.config.username, password=password or simulator.config.password
    )
    return KlarnaClient(simulator.url, lambda: credentials, timeout_seconds=timeout, pool=pool)


def in_memory_klarna_client(simulator: KlarnaSimulator) -> KlarnaClient:
    """The client for a simulator that is not started, served in memory (for unit tests: no I/O)."""
    return klarna_client(simulator, pool=simulator.in_process_pool())


def requested_session(request: RecordedRequest) -> str:
    """The session a Read or Disable Session request names (the last segment of its path)."""
    return request.path.rsplit("/", 1)[-1]


def klarna_reads(simulator: KlarnaSimulator) -> list[str]:
    """The ids of the sessions read (Read Session) from the simulator, in the order asked."""
    return [requested_session(request) for request in simulator.requests_to("GET")]
