"""One Lambda execution environment: imports a function's handler once, then runs invocations.

The local stack starts one of these per warm "instance" of a function, as
`python -P local/emulators/lambda_worker.py HANDLER FD`, with the function's own environment, its code
directory as the working directory and PYTHONPATH = code directory + layers (what Lambda gives it).
Invocations arrive as JSON messages on the connection FD (`multiprocessing.connection`, whose framing
both ends share); answers go back on it, so stdout and stderr stay the function's own logs. End of input
(the stack stopped, or died) ends the worker.

Standard library only, and nothing from this repository: the function must see exactly its own imports.
"""

import decimal
import importlib
import json
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any


class LambdaContext:
    """What Lambda passes as `context`; the remaining time counts down from the invocation's deadline."""

    def __init__(self, invocation: dict[str, Any]) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.invoked_function_arn = invocation["invoked_function_arn"]
        self.aws_request_id = invocation["request_id"]
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + invocation["timeout_seconds"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _to_json(value: Any) -> Any:
    """As Lambda's Python runtime serialises a result: Decimals become numbers, anything else must be JSON."""

    def default(item: Any) -> Any:
        if isinstance(item, decimal.Decimal):
            return float(item)
        raise TypeError(f"Object of type {type(item).__name__} is not JSON serializable")

    return json.loads(json.dumps(value, default=default))


def _error(error_type: str, error: BaseException) -> dict[str, Any]:
    return {
        "errorType": error_type,
        "errorMessage": str(error),
        "stackTrace": traceback.format_exception(error),
    }


def _invoke(handler: Any, invocation: dict[str, Any]) -> dict[str, Any]:
    try:
        result = handler(invocation["event"], LambdaContext(invocation))
    except Exception as error:
        return {"ok": False, "error": _error(type(error).__name__, error)}
    try:
        return {"ok": True, "result": _to_json(result)}
    except (TypeError, ValueError) as error:
        return {"ok": False, "error": _error("Runtime.MarshalError", error)}


def _send(connection: Connection, message: dict[str, Any]) -> None:
    sys.stdout.flush()  # the invocation's log lines before its answer
    sys.stderr.flush()
    connection.send_bytes(json.dumps(message).encode())


def main(handler_spec: str, fd: int) -> int:
    # Ctrl-C in the terminal is for the stack, which stops its workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(fd)
    module_name, _, function_name = handler_spec.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as error:  # Lambda reports an init failure the same way
        _send(connection, {"ready": False, "error": _error("Runtime.ImportModuleError", error)})
        return 1
    _send(connection, {"ready": True})
    while True:
        try:
            invocation = json.loads(connection.recv_bytes())
        except EOFError:
            return 0
        _send(connection, _invoke(handler, invocation))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
