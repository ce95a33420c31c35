"""`python -m local.stack` (`make run`): the local stack's command line.

Prints one JSON line (the ready line, `READY_KEYS`) when everything runs, and stops everything it
started on Ctrl-C or SIGTERM, at any moment, start-up included: the signal is handled in a thread of its
own (`StopSignals`), which stops the stack while this one starts it or watches it.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from dataclasses import replace
from pathlib import Path

from local.common.cli import key_value
from local.common.logs import configure_logging
from local.common.signals import StopSignals
from local.emulators.fault_proxy import AWS_FAULT_PROFILES
from local.klarna_simulator import SimulatorConfig
from local.klarna_simulator.cli import add_run_options, run_config
from local.stack.options import StackOptions
from local.stack.stack import LocalStack, StackStopped
from local.template import TEMPLATE_PATH, TemplateError

_log = logging.getLogger("local.stack")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.stack",
        description="The whole tracker on 127.0.0.1, from template.yaml: DynamoDB Local, moto, the "
        "functions, an API gateway, the stream pump, the scheduler and a Klarna simulator.",
    )
    parser.add_argument(
        "--port", type=int, default=3000, help="gateway port (0: any free port; default 3000)"
    )
    parser.add_argument(
        "--klarna-url", default=None, metavar="URL", help="use this Klarna instead of the simulator"
    )
    parser.add_argument("--klarna-username", default=SimulatorConfig.username)
    parser.add_argument("--klarna-password", default=SimulatorConfig.password)
    parser.add_argument(
        "--poll-interval", type=float, default=10.0, metavar="SECONDS", help="scheduled runs (default 10)"
    )
    _add_pairs(parser, "--param", "NAME=VALUE", "a template parameter, e.g. LogLevel=DEBUG")
    _add_pairs(parser, "--env", "NAME=VALUE", "an extra environment variable for every function")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="warm instances per function, at most (default 2)"
    )
    parser.add_argument(
        "--aws-faults",
        choices=sorted(AWS_FAULT_PROFILES),
        default="none",
        help="faults on the functions' AWS calls (DynamoDB throttling, PutEvents entry failures)",
    )
    _add_pairs(
        parser,
        "--aws-fault-set",
        "KEY=VALUE",
        "one fault rate, e.g. dynamodb_throttle_rate=0.1 or put_events_failure_rate=0.3",
    )
    add_run_options(parser.add_argument_group("Klarna simulator"))
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the ready line to FILE (removed when the stack stops); hpp-tracker --local reads it",
    )
    parser.add_argument("--template", type=Path, default=TEMPLATE_PATH)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def _add_pairs(parser: argparse._ActionsContainer, flag: str, metavar: str, description: str) -> None:
    """A repeatable NAME=VALUE option."""
    parser.add_argument(flag, type=key_value, action="append", default=[], metavar=metavar, help=description)


def options_from_args(args: argparse.Namespace) -> StackOptions:
    simulator = run_config(args)
    return StackOptions(
        template=args.template,
        port=args.port,
        klarna_url=args.klarna_url,
        klarna_username=args.klarna_username,
        klarna_password=args.klarna_password,
        simulator=simulator,
        poll_interval=args.poll_interval,
        parameters=dict(args.param),
        environment=dict(args.env),
        concurrency=args.concurrency,
        aws_faults=replace(AWS_FAULT_PROFILES[args.aws_faults], seed=args.seed).with_overrides(
            dict(args.aws_fault_set)
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
        stack = LocalStack(options)  # reads the template
    except (ValueError, OSError) as error:  # TemplateError is a ValueError
        parser.error(str(error))
    configure_logging(args.log_level)
    with StopSignals(lambda received: _stop(stack, received)):
        return run(stack, ready_file=args.ready_file)


def _stop(stack: LocalStack, received: signal.Signals) -> None:
    _log.info("%s received", received.name)
    stack.stop()


def run(stack: LocalStack, *, ready_file: Path | None = None) -> int:
    """Start the stack, print the ready line (and write it to `ready_file`), and keep it running until it is
    stopped or an emulator exits."""
    try:
        ready = stack.start()
    except StackStopped:
        return 0
    except (TemplateError, RuntimeError, OSError) as error:
        _log.error("the local stack did not start: %s", error)
        return 1
    try:
        line = json.dumps(ready)
        if ready_file is not None:
            _write_ready_file(ready_file, line)
        print(line, flush=True)
        _log.info("ready; Ctrl-C stops everything")
        while not stack.stopped.wait(1.0):
            problem = stack.healthy()
            if problem is not None:
                _log.error("%s: stopping the stack", problem)
                return 1
        return 0
    finally:
        stack.stop()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)


def _write_ready_file(path: Path, line: str) -> None:
    """The whole line or nothing: a reader polling for the file never sees half of it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(line + "\n", encoding="utf-8")
    partial.replace(path)
