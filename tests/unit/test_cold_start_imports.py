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
    return set(json.loads(after_import(function, "sorted(sys.modules)")))


def after_import(function: str, expression: str) -> str:
    """`expression` (as JSON) in a fresh interpreter that has just imported the function's module."""
    done = subprocess.run(
        [sys.executable, "-c", f"import sys, json, {function}; print(json.dumps({expression}))"],
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
    return done.stdout.splitlines()[-1]


@pytest.mark.parametrize("function", ["callback", "sessions", "poller", "publisher"])
def test_no_function_loads_powertools_parameters_before_its_first_klarna_call(function: str) -> None:
    loaded = loaded_after_import(function)
    assert PARAMETERS not in loaded
    assert IDEMPOTENCY not in loaded
    assert "hpp_core.tracing" in loaded  # and every function is traced


def test_the_callback_does_without_powertools_event_handler() -> None:
    assert EVENT_HANDLER not in loaded_after_import("callback")


def test_the_callback_builds_no_model_its_normal_path_never_validates() -> None:
    built = json.loads(
        after_import(
            "callback",
            "{name: getattr(sys.modules['hpp_core.models'], name).__pydantic_complete__ for name in "
            "('TrackedSession', 'ConsumerLinks', 'PollerState', 'CallbackBody', 'KlarnaSession')}",
        )
    )
    assert built == {
        "TrackedSession": False,
        "ConsumerLinks": False,
        "PollerState": False,
        "CallbackBody": True,
        "KlarnaSession": True,
    }


@pytest.mark.parametrize("function", ["callback", "sessions", "poller", "publisher"])
def test_init_ends_with_the_collector_on_and_what_it_built_frozen(function: str) -> None:
    """The collector is off while the module initialises (docs/performance.md) and back on after it."""
    enabled, frozen = json.loads(
        after_import(function, "[__import__('gc').isenabled(), __import__('gc').get_freeze_count()]")
    )
    assert enabled is True
    assert frozen > 10_000  # the SDK, Powertools, pydantic and the clients: tens of thousands of objects
