"""The functions' Powertools Logger, made the same way for all four.

Powertools tries to decode every message as JSON (a message that is JSON is logged as an object). The
tracker's messages are sentences, for which `json.loads` fails by raising, on every line: the costliest
single step of the callback's "callback handled" line. Only a message that can be a JSON object or array
is decoded here; any other message is logged as it is, as Powertools logs one it cannot decode.
"""

import json
from typing import Any

from aws_lambda_powertools import Logger


def service_logger() -> Logger:
    """The function's logger (its service name from POWERTOOLS_SERVICE_NAME, as the template sets it)."""
    return Logger(json_deserializer=json_message)


def json_message(message: Any) -> Any:
    """A message as Powertools logs it: decoded if it is a JSON object or array (ValueError otherwise,
    which Powertools answers by keeping the message as it is)."""
    if isinstance(message, str) and message.lstrip().startswith(("{", "[")):
        return json.loads(message)
    raise ValueError("not a JSON object or array")
