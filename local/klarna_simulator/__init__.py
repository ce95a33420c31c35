"""A Klarna HPP simulator: Klarna's API, seeded consumer journeys, callbacks with chaos, and the truth.

Run on its own with ``python -m local.klarna_simulator`` (see ``--help``), or in-process::

    from local.klarna_simulator import KlarnaSimulator, SimulatorConfig, chaos_profile
"""

from local.klarna_simulator.chaos import CHAOS_PROFILES, ChaosProfile, chaos_profile
from local.klarna_simulator.journeys import Journey, JourneyModel, Outcome, Step
from local.klarna_simulator.simulator import FINAL_STATUSES, KlarnaSimulator, SimulatorConfig

__all__ = [
    "CHAOS_PROFILES",
    "FINAL_STATUSES",
    "ChaosProfile",
    "Journey",
    "JourneyModel",
    "KlarnaSimulator",
    "Outcome",
    "SimulatorConfig",
    "Step",
    "chaos_profile",
]
