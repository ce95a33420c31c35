"""What Lambda hands a handler: sample events from events/ and a context object."""

import copy
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"


def load_event(name: str) -> dict[str, Any]:
    """A sample event, e.g. `load_event("callback/in_progress")`; a fresh copy each call."""
    return copy.deepcopy(json.loads((EVENTS_DIR / f"{name}.json").read_text()))


def with_json_body(event: dict[str, Any], body: Any) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    changed["body"] = json.dumps(body)
    return changed


@dataclass
class LambdaContext:
    function_name: str = "hpp-tracker-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:hpp-tracker-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/hpp-tracker-test"
    log_stream_name: str = "2026/11/21/[$LATEST]test"
    function_version: str = "$LATEST"
    # Like Lambda's: the time left counts down from the invocation's start.
    timeout_seconds: float = 5.0
    started_at: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started_at + self.timeout_seconds - time.monotonic()) * 1000))
