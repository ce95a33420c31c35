"""What a function's cold start leaves out (docs/performance.md): each function module is imported in a
fresh interpreter, as Lambda's init imports it, and must not have loaded what its normal path does not
use. No time is measured; bench/cold_start.py does that."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The settings' placeholders the cold-start benchmark imports the functions under (nothing is called).
from bench.cold_start import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[2]
PARAMETERS = "aws_lambda_powertools.utilities.parameters"
EVENT_HANDLER = "aws_lambda_powertools.event_handler"
IDEMPOTENCY = "aws_lambda_powertools.utilities.idempotency"


def loaded_after_import(function: str) -> set[str]:
    """The modules a fresh interpreter holds after importing the function's module."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, json, {function}; print(json.dumps(sorted(sys.modules)))"],
        env={
            **os.environ,
            **ENVIRONMENT,
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "layers/hpp_core"), str(ROOT / "functions" / function)]
            ),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("function", ["callback", "sessions", "poller", "publisher"])
def test_no_function_loads_powertools_parameters_before_its_first_klarna_call(function: str) -> None:
    loaded = loaded_after_import(function)
    assert PARAMETERS not in loaded
    assert IDEMPOTENCY not in loaded
    assert "hpp_core.tracing" in loaded  # and every function is traced


def test_the_callback_does_without_powertools_event_handler() -> None:
    assert EVENT_HANDLER not in loaded_after_import("callback")
