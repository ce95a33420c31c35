"""`hpp-tracker`: see and repair a tracker deployment, one command per repair (docs/runbook.md).

    hpp-tracker status ID                     the stored row beside Klarna's answer, and what differs
    hpp-tracker reconcile ID... | --active-since DURATION | --all-due
    hpp-tracker republish ID...               a session's events on the bus again, same event ids
    hpp-tracker redrive [--dry-run]           the publisher's failure queue back into events
    hpp-tracker replay --from T --to T [--detail-type D]
    hpp-tracker check                         is the deployment healthy? (non-zero naming what is not)

Every command takes a target, `--stack NAME` (a deployed stack; standard AWS credentials and region) or
`--local READY_FILE` (the local stack), and `--json` for machine-readable output. Exit codes: 0 done,
1 not all done (the output says what), 2 a usage error. argparse: the standard library is enough here.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from hpp_core.models import is_session_id
from hpp_core.timestamps import parse_timestamp, utc_now
from ops.check import check
from ops.redrive import redrive
from ops.replay import replay
from ops.report import Report
from ops.sessions import reconcile, republish, status
from ops.target import Target, TargetError

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def duration(text: str) -> timedelta:
    """`90m`, `2h`, `1d12h`, `45s`: a length of time."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 2h or 1d12h")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    found = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if not found:
        raise argparse.ArgumentTypeError("the duration must be longer than 0")
    return found


def moment(text: str) -> datetime:
    """An ISO 8601 time (UTC unless it says otherwise), `now`, or a duration meaning that long ago."""
    if text.strip().lower() == "now":
        return utc_now()
    try:
        return parse_timestamp(text)
    except ValueError:
        pass
    try:
        return utc_now() - duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give ISO 8601 (2026-03-02T12:00:00Z), now, or how long ago (2h)"
        ) from None


def session_id(text: str) -> str:
    if not is_session_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a session id")
    return text


def build_parser() -> argparse.ArgumentParser:
    target = argparse.ArgumentParser(add_help=False)
    where = target.add_argument_group("target (one of)").add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", metavar="NAME", help="a deployed stack (its outputs name its resources)")
    where.add_argument("--local", metavar="READY_FILE", type=Path, help="the local stack's ready file")
    target.add_argument("--region", help="the stack's region (default: the standard AWS settings)")
    target.add_argument(
        "--no-assume-role",
        action="store_true",
        help="act with your own credentials instead of the stack's OperatorRole",
    )
    target.add_argument("--json", action="store_true", help="print the result as JSON")

    parser = argparse.ArgumentParser(
        prog="hpp-tracker", description="See and repair an hpp-tracker deployment (docs/runbook.md)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[target], help=text, description=text)

    command("status", "the stored session (token masked) beside Klarna's answer now").add_argument(
        "session_id", type=session_id, metavar="ID"
    )
    reconciling = command("reconcile", "read Klarna now and record its answer, as the poller does")
    which = reconciling.add_mutually_exclusive_group(required=True)
    which.add_argument("session_ids", type=session_id, nargs="*", metavar="ID", default=[])
    which.add_argument(
        "--active-since", type=duration, metavar="DURATION", help="not-final sessions active then"
    )
    which.add_argument("--all-due", action="store_true", help="every session due now (a poller run)")
    reconciling.add_argument("--rate", type=float, metavar="N", help="Klarna reads/s (default: the poller's)")
    command("republish", "put sessions' events on the bus again (same event ids)").add_argument(
        "session_ids", type=session_id, nargs="+", metavar="ID"
    )
    redriving = command("redrive", "the publisher's failure queue back into events, then empty it")
    redriving.add_argument(
        "--dry-run", action="store_true", help="say what would be published; change nothing"
    )
    redriving.add_argument(
        "--scan-trimmed",
        action="store_true",
        help="for records gone from the stream (24 h), scan the table for the sessions of their window",
    )
    replaying = command("replay", "replay the event archive onto the bus and wait for it")
    replaying.add_argument("--from", dest="start", type=moment, required=True, metavar="T")
    replaying.add_argument("--to", dest="end", type=moment, required=True, metavar="T")
    replaying.add_argument("--detail-type", metavar="D", help="only to the rules that match this detail type")
    replaying.add_argument("--timeout", type=float, default=900, metavar="SECONDS")
    command("check", "is the deployment healthy? names every part that is not").add_argument(
        "--poller-within", type=duration, default=timedelta(minutes=10), metavar="DURATION"
    )
    return parser


def _run(args: argparse.Namespace) -> Report:
    if args.local is not None:
        target = Target.from_ready_file(args.local)
    else:
        target = Target.from_stack(args.stack, region=args.region, assume_role=not args.no_assume_role)
    commands: dict[str, Callable[[], Report]] = {
        "status": lambda: status(target, args.session_id),
        "reconcile": lambda: reconcile(
            target,
            session_ids=args.session_ids,
            active_since=args.active_since,
            all_due=args.all_due,
            rate_per_second=args.rate,
        ),
        "republish": lambda: republish(target, args.session_ids),
        "redrive": lambda: redrive(target, dry_run=args.dry_run, scan_trimmed=args.scan_trimmed),
        "replay": lambda: replay(
            target, start=args.start, end=args.end, detail_type=args.detail_type, timeout_seconds=args.timeout
        ),
        "check": lambda: check(target, poller_within=args.poller_within),
    }
    return commands[args.command]()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "replay" and args.end <= args.start:
        parser.error("--to must be after --from")
    try:
        report = _run(args)
    except (TargetError, BotoCoreError, ClientError) as error:
        report = Report(args.command, ok=False, data={"error": str(error)})
        report.failed(f"hpp-tracker {args.command}: {error}")
    if args.json:
        print(report.as_json())
    else:
        print("\n".join(report.lines))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
