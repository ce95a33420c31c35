"""Chaos profiles: how badly the simulated Klarna behaves.

Callbacks can be dropped (never sent: only Read Session will tell), duplicated (the same `event_id` sent
twice), delayed (held back, so a later status can overtake an earlier one) or emptied (sent with an empty
body, as a retry of a related product was reported to do). Read Session can be slow (past a client's
time-out), fail with a 5xx, or answer 429. Every rate is a probability per callback event or per read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class ChaosProfile:
    name: str = "none"
    callback_drop_rate: float = 0.0
    callback_duplicate_rate: float = 0.0
    callback_delay_rate: float = 0.0
    callback_delay_seconds: tuple[float, float] = (0.5, 3.0)
    callback_empty_rate: float = 0.0
    read_slow_rate: float = 0.0
    read_slow_seconds: tuple[float, float] = (1.0, 3.0)
    read_error_rate: float = 0.0
    read_rate_limited_rate: float = 0.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_rate") and not 0.0 <= value <= 1.0:
                raise ValueError(f"chaos {item.name} must be between 0 and 1, not {value!r}")
            if item.name.endswith("_seconds") and not 0.0 <= value[0] <= value[1]:
                raise ValueError(f"chaos {item.name} must be (min, max) with 0 <= min <= max, not {value!r}")

    def with_overrides(self, overrides: dict[str, str]) -> ChaosProfile:
        """This profile with fields changed from command-line strings, e.g. {"callback_drop_rate": "0.5"}."""
        known = {item.name: item for item in fields(self) if item.name != "name"}
        changes: dict[str, Any] = {}
        for key, raw in overrides.items():
            if key not in known:
                raise ValueError(f"unknown chaos setting {key!r}; known: {', '.join(sorted(known))}")
            if key.endswith("_seconds"):
                low, _, high = raw.partition(":")
                changes[key] = (float(low), float(high or low))
            else:
                changes[key] = float(raw)
        return replace(self, name=f"{self.name}+custom" if changes else self.name, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CHAOS_PROFILES: dict[str, ChaosProfile] = {
    "none": ChaosProfile(),
    # Enough of everything that a tracker relying on callbacks alone would lose sessions in a few hundred.
    "default": ChaosProfile(
        name="default",
        callback_drop_rate=0.05,
        callback_duplicate_rate=0.10,
        callback_delay_rate=0.10,
        callback_empty_rate=0.05,
        read_slow_rate=0.03,
        read_error_rate=0.03,
        read_rate_limited_rate=0.03,
    ),
    "heavy": ChaosProfile(
        name="heavy",
        callback_drop_rate=0.30,
        callback_duplicate_rate=0.30,
        callback_delay_rate=0.30,
        callback_delay_seconds=(0.5, 6.0),
        callback_empty_rate=0.15,
        read_slow_rate=0.10,
        read_error_rate=0.10,
        read_rate_limited_rate=0.10,
    ),
}


def chaos_profile(name: str, overrides: dict[str, str] | None = None) -> ChaosProfile:
    try:
        profile = CHAOS_PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown chaos profile {name!r}; choose one of {', '.join(CHAOS_PROFILES)}"
        ) from None
    return profile.with_overrides(overrides or {})
