"""`python -m local.demo` (`make demo`): the demo's command line.

Runs the tracker on this machine against a chaotic simulated Klarna (`local.demo.run`), prints the report
(`local.demo.report`) and exits 0 only when the tracker matched Klarna for every session.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from local.common.logs import configure_logging
from local.demo.report import format_report
from local.demo.run import DemoOptions, run_demo
from local.klarna_simulator.chaos import CHAOS_PROFILES


def build_parser() -> argparse.ArgumentParser:
    defaults = DemoOptions()
    parser = argparse.ArgumentParser(
        prog="python -m local.demo",
        description="Run the tracker locally against a chaotic simulated Klarna and check it lost nothing.",
    )
    parser.add_argument("--sessions", type=int, default=defaults.sessions, help="sessions to create (300)")
    parser.add_argument("--chaos", choices=sorted(CHAOS_PROFILES), default=defaults.chaos)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--session-lifetime",
        type=float,
        default=defaults.session_lifetime,
        metavar="SECONDS",
        help="Klarna's session lifetime (abandoned sessions expire after it; default 40)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=defaults.deadline,
        metavar="SECONDS",
        help="give up this long after the last session was created (default 240)",
    )
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="warm instances (4)")
    parser.add_argument("--port", type=int, default=0, help="gateway port (default: any free port)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the report here")
    parser.add_argument(
        "--log-file", type=Path, default=None, metavar="FILE", help="the stack's log (default: a temp file)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sessions < 1:
        parser.error("--sessions must be at least 1")
    log_file = args.log_file or Path(tempfile.gettempdir()) / f"hpp-tracker-demo-{os.getpid()}.log"
    options = DemoOptions(
        sessions=args.sessions,
        chaos=args.chaos,
        seed=args.seed,
        session_lifetime=args.session_lifetime,
        deadline=args.deadline,
        concurrency=args.concurrency,
        port=args.port,
        log_file=log_file,
    )
    print(
        f"starting the local stack (log: {log_file}); {options.sessions} sessions, chaos {options.chaos},"
        f" seed {options.seed}",
        flush=True,
    )
    with log_file.open("a") as log:
        configure_logging("INFO", stream=log)
        result = run_demo(options)
    print(format_report(result.report), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result.report, indent=2))
    return 0 if result.ok else 1
