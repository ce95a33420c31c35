"""Consumer journeys: what a consumer (and the merchant) does with each session, drawn from a seeded model.

A journey is a list of steps, each a delay and an action. Actions are Klarna statuses the consumer causes
(IN_PROGRESS when the page opens; FAILED, BACK or ERROR then, usually, a retry; CANCELLED or COMPLETED to
finish) or MERCHANT_DISABLE (the merchant disables the session through the API). A journey that stops on
a status that is not final is abandoned: the session stays there until it expires.

The same seed gives the same journeys in the same creation order: the n-th session's journey, ids and
chaos draws come from a generator seeded with (seed, n), never from the order threads happen to run in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

MERCHANT_DISABLE = "MERCHANT_DISABLE"
DETOUR_STATUSES = ("FAILED", "BACK", "ERROR")


class Outcome(StrEnum):
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    ABANDONED = "ABANDONED"  # stays non-final until it expires (Klarna then answers 404)
    MERCHANT_DISABLED = "MERCHANT_DISABLED"


@dataclass(frozen=True)
class Step:
    delay: float  # seconds after the previous step (or after creation, for the first)
    action: str  # a status, or MERCHANT_DISABLE

    def as_dict(self) -> dict[str, object]:
        return {"delay": round(self.delay, 3), "action": self.action}


@dataclass(frozen=True)
class Journey:
    outcome: Outcome
    steps: tuple[Step, ...]

    def as_dict(self) -> dict[str, object]:
        return {"outcome": self.outcome.value, "steps": [step.as_dict() for step in self.steps]}


@dataclass(frozen=True)
class JourneyModel:
    """The probabilities of the consumer model; the defaults reach every status in a few dozen sessions."""

    open_page: float = 0.9  # the consumer opens the page at all
    detour: float = 0.35  # chance of each FAILED / BACK / ERROR detour before the end (at most max_detours)
    max_detours: int = 2
    give_up_after_detour: float = 0.2  # after a detour, the consumer leaves instead of retrying
    completed: float = 0.6
    cancelled: float = 0.15
    abandoned: float = 0.12
    merchant_disabled: float = 0.13

    def draw(self, rng: random.Random, think_time: tuple[float, float]) -> Journey:
        low, high = think_time

        def pause() -> float:
            return rng.uniform(low, high)

        outcome = rng.choices(
            list(Outcome),
            weights=[self.completed, self.cancelled, self.abandoned, self.merchant_disabled],
        )[0]
        if rng.random() >= self.open_page:
            # Never opened: either forgotten until it expires, or disabled by the merchant.
            if outcome is Outcome.MERCHANT_DISABLED:
                return Journey(outcome, (Step(pause(), MERCHANT_DISABLE),))
            return Journey(Outcome.ABANDONED, ())
        steps = [Step(pause(), "IN_PROGRESS")]
        for _ in range(self.max_detours):
            if rng.random() >= self.detour:
                break
            steps.append(Step(pause(), rng.choice(DETOUR_STATUSES)))
            if rng.random() < self.give_up_after_detour:
                return Journey(Outcome.ABANDONED, tuple(steps))
            steps.append(Step(pause(), "IN_PROGRESS"))  # the consumer tries again
        match outcome:
            case Outcome.COMPLETED | Outcome.CANCELLED:
                steps.append(Step(pause(), outcome.value))
            case Outcome.MERCHANT_DISABLED:
                steps.append(Step(pause(), MERCHANT_DISABLE))
            case Outcome.ABANDONED:
                pass
        return Journey(outcome, tuple(steps))


def session_rng(seed: int, ordinal: int) -> random.Random:
    """The generator for the `ordinal`-th session of a run (string seeds hash the same in every process)."""
    return random.Random(f"hpp-simulator/{seed}/{ordinal}")
