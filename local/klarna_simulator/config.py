"""How a simulator run behaves: credentials, seed, lifetimes, journeys, chaos, callbacks, rate limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from local.klarna_simulator.chaos import ChaosProfile, chaos_profile
from local.klarna_simulator.journeys import JourneyModel
from local.klarna_simulator.klarna_api import SESSIONS_PATH

_RESERVED_PATHS = ("/pay", "/_simulator", SESSIONS_PATH)


@dataclass(frozen=True)
class SimulatorConfig:
    username: str = "PK_simulator_merchant"
    password: str = "simulator-password"  # a local fake, not a secret
    seed: int = 0
    # Klarna's HPP sessions live ~47 hours; locally expiry should happen while you watch.
    session_lifetime: float = 600.0
    journeys: str = "auto"  # "auto": each new session gets a seeded consumer journey; "manual": none
    think_time: tuple[float, float] = (0.5, 3.0)  # seconds between a consumer's steps
    journey_model: JourneyModel = field(default_factory=JourneyModel)
    chaos: ChaosProfile = field(default_factory=lambda: chaos_profile("none"))
    # Klarna waits 3 seconds for an answer, then retries "after a few seconds", 4 calls in all.
    callback_timeout: float = 3.0
    callback_attempts: int = 4
    callback_retry_delay: float = 5.0
    # Whether Klarna retries a 4xx is not documented; retrying is the harsher assumption for the tracker.
    retry_callbacks_on_4xx: bool = True
    # Whether Klarna calls back for a merchant's disable is not documented; by default it does not.
    callback_on_disable: bool = False
    # Requests per second per merchant: Klarna's production limits (playground: 5 and 50).
    create_rate_limit: int = 40
    other_rate_limit: int = 200
    # Where a MERCHANT_DISABLE step sends `DELETE` ("{session_id}" is filled in), e.g. the tracker's
    # DELETE /sessions/{session_id}; without one the merchant disables at Klarna's own API.
    merchant_disable_url: str | None = None
    # Where the API URLs a create returns point (session_url, distribution_url, ...). Klarna: "the
    # structure of the URLs may change. Do not recreate URLs." Another path here (e.g. /hpp/v2/s) shows a
    # client uses what it was given: a session created then is served there only, and the documented
    # form answers 404 for it.
    session_url_path: str = SESSIONS_PATH
    # Distribution's success answer: Klarna documents both 201 and 204.
    distribution_status: int = 201
    workers: int = 16

    def __post_init__(self) -> None:
        if self.journeys not in ("auto", "manual"):
            raise ValueError(f"journeys must be 'auto' or 'manual', not {self.journeys!r}")
        if self.session_lifetime <= 0:
            raise ValueError("session_lifetime must be positive")
        if self.callback_attempts < 1:
            raise ValueError("callback_attempts must be at least 1")
        if not 0 <= self.think_time[0] <= self.think_time[1]:
            raise ValueError("think_time must be (min, max) with 0 <= min <= max")
        if self.distribution_status not in (201, 204):
            raise ValueError("distribution_status must be 201 or 204")
        self._check_session_url_path()

    def _check_session_url_path(self) -> None:
        path = self.session_url_path
        reserved = path != SESSIONS_PATH and any(
            path == taken or path.startswith(f"{taken}/") or taken.startswith(f"{path}/")
            for taken in _RESERVED_PATHS
        )
        if not path.startswith("/") or path.endswith("/") or "?" in path or "#" in path or reserved:
            raise ValueError(
                "session_url_path must be a path like /hpp/v2/s: starting with /, not ending with /, "
                "apart from /pay, /_simulator and /hpp/v1/sessions"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "seed": self.seed,
            "session_lifetime": self.session_lifetime,
            "journeys": self.journeys,
            "think_time": list(self.think_time),
            "chaos": self.chaos.as_dict(),
            "callback_timeout": self.callback_timeout,
            "callback_attempts": self.callback_attempts,
            "callback_retry_delay": self.callback_retry_delay,
            "retry_callbacks_on_4xx": self.retry_callbacks_on_4xx,
            "callback_on_disable": self.callback_on_disable,
            "create_rate_limit": self.create_rate_limit,
            "other_rate_limit": self.other_rate_limit,
            "merchant_disable_url": self.merchant_disable_url,
            "session_url_path": self.session_url_path,
            "distribution_status": self.distribution_status,
        }
