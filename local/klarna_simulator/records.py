"""What the simulator knows about each session: its state at Klarna and the record of everything that
happened to it (status changes, callbacks and their deliveries, merchant actions), which is the truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from local.klarna_simulator.clock import format_timestamp
from local.klarna_simulator.klarna_api import KLARNA_CHECKOUT_PATH, SESSIONS_PATH

if TYPE_CHECKING:
    import random

    from local.klarna_simulator.journeys import Journey

FINAL_STATUSES = frozenset({"COMPLETED", "CANCELLED", "DISABLED"})
COMPLETION_FIELDS = ("authorization_token", "order_id", "klarna_reference")


class InvalidOperation(ValueError):
    """The session cannot change now: it has expired or is already final."""


@dataclass
class Attempt:
    number: int
    at: str
    result: str  # "http_200", "http_503", "timeout", "connection_error"
    http_status: int | None
    empty_body: bool
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300  # noqa: PLR2004


@dataclass
class Delivery:
    copy: int  # 1, or 2 for a duplicate
    attempts: list[Attempt] = field(default_factory=list)
    outcome: str = "pending"  # "pending", "delivered", "gave_up"


@dataclass
class CallbackEvent:
    event_id: str
    status: str
    updated_at: str
    body: dict[str, Any]
    url: str | None  # status_update with {{session_id}} filled in; None when the session has none
    dropped: bool = False
    duplicated: bool = False
    delay: float = 0.0
    emptied: bool = False
    duplicate_gap: float = 0.0  # seconds between a duplicate and the first copy
    deliveries: list[Delivery] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        flags = {"dropped": self.dropped, "duplicated": self.duplicated, "delayed": self.delay > 0}
        flags["emptied"] = self.emptied
        chaos = [name for name, on in flags.items() if on]
        return {
            "event_id": self.event_id,
            "status": self.status,
            "updated_at": self.updated_at,
            "chaos": chaos,
            "delay_seconds": round(self.delay, 3),
            "url": without_query(self.url),  # the query holds the tracker's per-session secret
            "deliveries": [
                {
                    "copy": delivery.copy,
                    "outcome": delivery.outcome,
                    "attempts": [attempt.__dict__ for attempt in delivery.attempts],
                }
                for delivery in self.deliveries
            ],
        }


@dataclass
class StatusChange:
    status: str
    updated_at: str
    # "create", "seed" (a test's add_session), "consumer", "merchant_api" (Disable Session),
    # "merchant" (journey step), "control" (act)
    source: str


@dataclass
class SimSession:
    session_id: str
    ordinal: int
    rng: random.Random
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    status: str
    place_order_mode: str
    merchant_urls: dict[str, str]
    journey: Journey | None
    options: dict[str, Any] = field(default_factory=dict)
    # The path its API URLs are under (session_url = {base}{api_path}/{session_id}).
    api_path: str = SESSIONS_PATH
    payment_session_url: str | None = None
    profile_id: str | None = None
    authorization_token: str | None = None
    order_id: str | None = None
    klarna_reference: str | None = None
    # More Read Session fields (e.g. `customer`), as a test seeded them.
    read_fields: dict[str, Any] = field(default_factory=dict)
    history: list[StatusChange] = field(default_factory=list)
    callbacks: list[CallbackEvent] = field(default_factory=list)
    merchant_actions: list[dict[str, Any]] = field(default_factory=list)
    distributions: list[dict[str, Any]] = field(default_factory=list)
    journey_position: int = 0  # steps taken so far

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def completes_with_order(self) -> bool:
        """COMPLETED carries an order_id and klarna_reference (not an authorization_token): with
        PLACE_ORDER / CAPTURE_ORDER, and for a Klarna Checkout order."""
        kco = self.payment_session_url is not None and KLARNA_CHECKOUT_PATH in self.payment_session_url
        return self.place_order_mode != "NONE" or kco

    def expired(self, now: datetime) -> bool:
        return now > self.expires_at

    def status_update_url(self) -> str | None:
        """`merchant_urls.status_update` with `{{session_id}}` filled in, as Klarna calls it."""
        url = self.merchant_urls.get("status_update")
        return url.replace("{{session_id}}", self.session_id) if url else None

    def read_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session_id": self.session_id,
            "status": self.status,
            "updated_at": format_timestamp(self.updated_at),
            "expires_at": format_timestamp(self.expires_at),
        }
        for name in COMPLETION_FIELDS:
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body | self.read_fields

    def final_status(self, now: datetime) -> str | None:
        """The status the tracker must end with: Klarna's final one, EXPIRED, or None while still open."""
        if self.is_final:
            return self.status
        return "EXPIRED" if self.expired(now) else None

    def truth(self, now: datetime) -> dict[str, Any]:
        return {
            **self.read_body(),
            "ordinal": self.ordinal,
            "place_order_mode": self.place_order_mode,
            "created_at": format_timestamp(self.created_at),
            "final_status": self.final_status(now),
            "journey": self.journey.as_dict() if self.journey else None,
            "history": [change.__dict__ for change in self.history],
            "callbacks": [event.as_dict() for event in self.callbacks],
            "merchant_actions": list(self.merchant_actions),
            "distributions": list(self.distributions),
        }


def without_query(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
