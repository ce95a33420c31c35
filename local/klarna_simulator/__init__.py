"""A Klarna HPP simulator: Klarna's API, seeded consumer journeys, callbacks with chaos, the truth, and
a test API (seeded sessions, scripted faults, a request log) — the project's one fake Klarna.

Run on its own with ``python -m local.klarna_simulator`` (see ``--help``), or in-process::

    from local.klarna_simulator import KlarnaSimulator, SimulatorConfig, chaos_profile
"""

from local.klarna_simulator.chaos import CHAOS_PROFILES, ChaosProfile, chaos_profile
from local.klarna_simulator.config import SimulatorConfig
from local.klarna_simulator.journeys import Journey, JourneyModel, Outcome, Step
from local.klarna_simulator.klarna_api import SESSIONS_PATH
from local.klarna_simulator.rate_limits import rate_limit_headers
from local.klarna_simulator.records import FINAL_STATUSES, InvalidOperation
from local.klarna_simulator.scripting import Fault, RecordedRequest
from local.klarna_simulator.simulator import IN_PROCESS_URL, KlarnaSimulator

__all__ = [
    "CHAOS_PROFILES",
    "FINAL_STATUSES",
    "IN_PROCESS_URL",
    "SESSIONS_PATH",
    "ChaosProfile",
    "Fault",
    "InvalidOperation",
    "Journey",
    "JourneyModel",
    "KlarnaSimulator",
    "Outcome",
    "RecordedRequest",
    "SimulatorConfig",
    "Step",
    "chaos_profile",
    "rate_limit_headers",
]
