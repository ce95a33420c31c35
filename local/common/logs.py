"""Readable logs for the local stack: one line per event, `time  component  message`, on stderr.

stdout is kept for the one machine-readable line each command prints when it is ready.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO


class _ComponentFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # "local.klarna" -> "klarna", "local.fn.CallbackFunction" -> "CallbackFunction"
        component = getattr(record, "component", None) or record.name.rsplit(".", 1)[-1]
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        line = f"{stamp}  {component:<18} {level}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Log the local components at `level` to `stream` (stderr by default; the demo sends them to a file)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_ComponentFormatter())
    root = logging.getLogger("local")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
