"""Klarna for the unit tests: the simulator, never started, and the tracker's own KlarnaClient talking
to it in memory through its in-process pool (no I/O)."""

import pytest

from hpp_core.klarna import KlarnaClient
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import in_memory_klarna_client, simulated_klarna


@pytest.fixture
def simulator() -> KlarnaSimulator:
    """Klarna on the wall clock; a module whose tests stand Klarna's clock still overrides this."""
    return simulated_klarna()


@pytest.fixture
def klarna(simulator: KlarnaSimulator) -> KlarnaClient:
    return in_memory_klarna_client(simulator)
