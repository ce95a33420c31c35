"""Run one function's handler over events, traced, as Lambda would: `python -m tests.support.traced_run`.

Tracing must be on from the first import (Powertools Tracer decides once per process, and patching
botocore cannot be undone), so tests/integration/test_tracing.py runs each function in a process of its
own. The environment says where everything is (AWS_XRAY_DAEMON_ADDRESS: the test's UDP socket). stdin
is `{"function": "callback", "events": [...]}`; stdout ends with a line `ANSWERS [...]`, the handler's
answers (the lines before it are the handler's logs). Each event is its own invocation with its own
trace id, set as Lambda sets it (_X_AMZN_TRACE_ID).
"""

import importlib
import json
import os
import secrets
import sys
from typing import Any

from tests.support.lambda_runtime import LambdaContext


def trace_header() -> str:
    return f"Root=1-{secrets.token_hex(4)}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=1"


def main() -> None:
    plan: dict[str, Any] = json.load(sys.stdin)
    module = importlib.import_module(plan["function"])
    answers = []
    for event in plan["events"]:
        os.environ["_X_AMZN_TRACE_ID"] = trace_header()
        answers.append(module.lambda_handler(event, LambdaContext(timeout_seconds=30)))
    print("ANSWERS " + json.dumps(answers), flush=True)


if __name__ == "__main__":
    main()
