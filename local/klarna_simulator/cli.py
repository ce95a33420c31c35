"""`python -m local.klarna_simulator`: run the simulator on its own until Ctrl-C or SIGTERM.

Prints one JSON line when ready (`klarna_url`, `username`, `password`); logs go to stderr. The options
that shape a run (seed, chaos, journeys, timings) are defined once here (`add_run_options`,
`run_config`): the local stack's command line offers the same ones for the simulator it starts.
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any

from local.common.cli import key_value, seconds_range
from local.common.logs import configure_logging
from local.common.signals import StopSignals
from local.klarna_simulator import KlarnaSimulator, SimulatorConfig
from local.klarna_simulator.chaos import CHAOS_PROFILES, chaos_profile


def add_run_options(group: argparse._ActionsContainer) -> None:
    """The options of a simulator run that every command starting one offers."""
    defaults = SimulatorConfig()
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--chaos", choices=sorted(CHAOS_PROFILES), default="none")
    group.add_argument(
        "--chaos-set",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one chaos setting, e.g. callback_drop_rate=0.5 or read_slow_seconds=1:4",
    )
    group.add_argument("--journeys", choices=("auto", "manual"), default=defaults.journeys)
    group.add_argument("--session-lifetime", type=float, default=defaults.session_lifetime, metavar="SECONDS")
    group.add_argument("--think-time", type=seconds_range, default=defaults.think_time, metavar="MIN:MAX")
    group.add_argument(
        "--callback-retry-delay", type=float, default=defaults.callback_retry_delay, metavar="SECONDS"
    )


def run_config(args: argparse.Namespace, **more: Any) -> SimulatorConfig:
    """The configuration `add_run_options`' options name, with `more` of SimulatorConfig's fields."""
    return SimulatorConfig(
        seed=args.seed,
        chaos=chaos_profile(args.chaos, dict(args.chaos_set)),
        journeys=args.journeys,
        session_lifetime=args.session_lifetime,
        think_time=args.think_time,
        callback_retry_delay=args.callback_retry_delay,
        **more,
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m local.klarna_simulator",
        description="Klarna HPP API simulator: sessions, seeded consumer journeys, callbacks, chaos, truth.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    add_run_options(parser)
    parser.add_argument(
        "--callback-timeout", type=float, default=defaults.callback_timeout, metavar="SECONDS"
    )
    parser.add_argument("--callback-attempts", type=int, default=defaults.callback_attempts)
    parser.add_argument("--callback-on-disable", action="store_true")
    parser.add_argument(
        "--create-rate-limit", type=int, default=defaults.create_rate_limit, metavar="PER_SECOND"
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=defaults.other_rate_limit,
        metavar="PER_SECOND",
        help="read/disable/distribute requests per second",
    )
    parser.add_argument(
        "--merchant-disable-url",
        default=None,
        metavar="URL",
        help="DELETE sent here by merchant-disable journeys ({session_id} filled in)",
    )
    parser.add_argument(
        "--session-url-path",
        default=defaults.session_url_path,
        metavar="PATH",
        help="where the API URLs a create returns point (default the documented /hpp/v1/sessions)",
    )
    parser.add_argument(
        "--distribution-status", type=int, choices=(201, 204), default=defaults.distribution_status
    )
    parser.add_argument("--username", default=defaults.username)
    parser.add_argument("--password", default=defaults.password)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return run_config(
        args,
        username=args.username,
        password=args.password,
        callback_timeout=args.callback_timeout,
        callback_attempts=args.callback_attempts,
        callback_on_disable=args.callback_on_disable,
        create_rate_limit=args.create_rate_limit,
        other_rate_limit=args.rate_limit,
        merchant_disable_url=args.merchant_disable_url,
        session_url_path=args.session_url_path,
        distribution_status=args.distribution_status,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    configure_logging(args.log_level)
    stop = threading.Event()
    # Not signal.signal(..., lambda: stop.set()): a handler taking the Event's lock while the main thread
    # holds it in wait() deadlocks (see local.common.signals).
    with (
        StopSignals(lambda _: stop.set()),
        KlarnaSimulator(config, host=args.host, port=args.port) as simulator,
    ):
        ready = {"klarna_url": simulator.url, "username": config.username, "password": config.password}
        print(json.dumps(ready), flush=True)
        stop.wait()
    return 0
