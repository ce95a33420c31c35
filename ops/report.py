"""What a command did, for a person (lines) and for a program (`--json`: the same facts as data)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    command: str
    # False when the command could not do all it was asked (the process then exits 1).
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def say(self, line: str) -> None:
        self.lines.append(line)

    def failed(self, line: str) -> None:
        self.ok = False
        self.lines.append(line)

    def as_json(self) -> str:
        return json.dumps({"command": self.command, "ok": self.ok, **self.data}, default=str, indent=2)
