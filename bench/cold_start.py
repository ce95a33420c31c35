"""Cold start of each function against the SDK's own: `python -m bench.cold_start [--quick]`.

What Lambda's init does for a handler module, as whole processes: `python -c "import <handler module>"`
against `python -c "import boto3; boto3.client('dynamodb')"`, in a clean virtualenv holding only the
layer's requirements and boto3 (built here once, under .bench/, which git ignores), with the project's
code copied to a read-only directory and PYTHONDONTWRITEBYTECODE=1, so that no `.pyc` of it is written or
read, as on Lambda (its code directory is read-only). `--precompiled` ships the project's bytecode with the
copy instead (what `make build` does: compileall for python3.13), to show what that saves. Tracing is on
(LAMBDA_TASK_ROOT set): Tracer patches botocore as it does in Lambda.

Runs alternate subject and baseline in pairs; each set prints the median ratio of its pairs. Then one
`-X importtime` run per function, summed by top-level package, minus the baseline's: what is left of the
cold start, largest first. A `tracer` row measures Tracer alone (its import and patching botocore), the
cost tracing adds to every function; a `floor` row what every function pays before its own code (the
SDK's client, Powertools Logger, Metrics and Tracer, pydantic's first model).
"""

import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / ".bench" / "cold-start"
FUNCTIONS = ("callback", "sessions", "poller", "publisher")
BASELINE = "import boto3; boto3.client('dynamodb')"
TRACER_ONLY = (
    "import boto3; from aws_lambda_powertools import Tracer; "
    "Tracer(patch_modules=('botocore',)); boto3.client('dynamodb')"
)
# What every function built as the project's standards ask pays before its own code: the SDK's client,
# Powertools Logger, Metrics and Tracer (patching botocore), and pydantic with one model built (its first
# model's class imports most of pydantic's machinery). A goal under this row is out of reach with them.
FLOOR = """\
import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from pydantic import BaseModel
class First(BaseModel):
    value: int
Tracer(patch_modules=("botocore",)); Logger(); Metrics(); boto3.client("dynamodb")
"""
# What the template gives every function, enough for its settings to load (nothing is called at import).
ENVIRONMENT = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "TABLE_NAME": "sessions",
    "STATE_TABLE_NAME": "state",
    "IDEMPOTENCY_TABLE_NAME": "idempotency",
    "EVENT_BUS_NAME": "bus",
    "KLARNA_API_URL": "https://api.playground.klarna.com",
    "KLARNA_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:klarna",
    "POWERTOOLS_METRICS_NAMESPACE": "HppTracker",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def requirements() -> list[str]:
    """The layer's pins and the boto3/botocore pins the project runs with (Lambda's runtime has its own)."""
    layer = (ROOT / "layers/hpp_core/requirements.txt").read_text().splitlines()
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    sdk = [line for line in dev if re.match(r"(boto3|botocore)==", line)]
    return [line.strip() for line in layer + sdk if line.strip() and not line.startswith("#")]


def virtualenv() -> Path:
    """The clean virtualenv, made once per set of requirements."""
    pins = requirements()
    venv = BUILD / f"venv-{hashlib.sha256(' '.join(pins).encode()).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], check=True)
        (venv / ".complete").touch()
    return python


# --without-tracer: hpp_core.tracing's Tracer replaced by a disabled stand-in (what tracing costs).
TRACER_LINE = 'tracer = Tracer(patch_modules=("botocore",))'
NO_TRACER_LINE = (
    'tracer = __import__("types").SimpleNamespace(disabled=True, service=None)  # bench: no Tracer'
)


def code_copy(function: str, *, precompiled: bool, source: Path = ROOT, tracer: bool = True) -> Path:
    """The layer's package and the function's module (of the checkout at `source`), copied as Lambda
    unpacks them, then made read-only."""
    target = BUILD / ("code-precompiled" if precompiled else "code") / function
    if target.exists():
        for path in [target, *target.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(target)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(source / "layers/hpp_core/hpp_core", target / "hpp_core", ignore=ignore)
    shutil.copy(source / "functions" / function / f"{function}.py", target)
    tracing = target / "hpp_core" / "tracing.py"
    if not tracer and tracing.exists():
        assert TRACER_LINE in tracing.read_text(), "hpp_core.tracing no longer makes its Tracer as expected"
        tracing.write_text(tracing.read_text().replace(TRACER_LINE, NO_TRACER_LINE))
    if precompiled:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(target)],
            check=True,
        )
    for path in [*target.rglob("*"), target]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return target


def environment(code: Path, function: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        **ENVIRONMENT,
        "PYTHONPATH": str(code),
        "LAMBDA_TASK_ROOT": str(code),
        "POWERTOOLS_SERVICE_NAME": f"hpp-{function}",
    }


def run(python: Path, source: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([str(python), "-c", source], env=env, check=True, cwd=BUILD)
    return time.perf_counter() - start


def paired_ratio(python: Path, subject: str, env: dict[str, str], pairs: int) -> float:
    """The median of `pairs` subject/baseline ratios, the two alternating (which goes first, too)."""
    ratios = []
    for index in range(pairs):
        if index % 2:
            base, timed = run(python, BASELINE, env), run(python, subject, env)
        else:
            timed, base = run(python, subject, env), run(python, BASELINE, env)
        ratios.append(timed / base)
    return statistics.median(ratios)


def import_times(python: Path, source: str, env: dict[str, str]) -> dict[str, float]:
    """Self time (ms) of every module `source` imports, summed by top-level package."""
    done = subprocess.run(
        [str(python), "-X", "importtime", "-c", source],
        env=env,
        check=True,
        cwd=BUILD,
        capture_output=True,
        text=True,
    )
    totals: defaultdict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S.*)$", line)
        if match:
            totals[match.group(2).strip().split(".")[0]] += int(match.group(1)) / 1000
    return totals


def breakdown(python: Path, function: str, env: dict[str, str], runs: int = 5) -> list[tuple[str, float]]:
    """What the handler imports beyond the baseline, by package (median ms over `runs`), largest first."""
    subject = [import_times(python, f"import {function}", env) for _ in range(runs)]
    base = [import_times(python, BASELINE, env) for _ in range(runs)]
    packages = set().union(*subject)
    extra = {
        name: statistics.median(s.get(name, 0.0) for s in subject)
        - statistics.median(b.get(name, 0.0) for b in base)
        for name in packages
    }
    return sorted(((name, ms) for name, ms in extra.items() if ms >= 1), key=lambda item: -item[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one set of 6 pairs, no breakdown")
    parser.add_argument("--sets", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--precompiled", action="store_true", help="ship the project's .pyc with the code")
    parser.add_argument("--functions", nargs="*", default=list(FUNCTIONS), choices=FUNCTIONS)
    parser.add_argument("--without-tracer", action="store_true", help="hpp_core.tracing without its Tracer")
    parser.add_argument(
        "--source", type=Path, default=ROOT, help="measure another checkout's code (e.g. `git archive main`)"
    )
    args = parser.parse_args()
    sets, pairs = (1, 6) if args.quick else (args.sets, args.pairs)
    python = virtualenv()
    print(f"cold start, handler import / `{BASELINE}`: {sets} set(s) of {pairs} alternating pairs, medians")
    code = "precompiled" if args.precompiled else "without .pyc (read-only copy)"
    print(f"project code {code}; tracing {'replaced by a stand-in' if args.without_tracer else 'on'}")
    for function in args.functions:
        env = environment(
            code_copy(
                function, precompiled=args.precompiled, source=args.source, tracer=not args.without_tracer
            ),
            function,
        )
        ratios = [paired_ratio(python, f"import {function}", env, pairs) for _ in range(sets)]
        print(f"  {function:<10} " + "  ".join(f"{ratio:.2f}x" for ratio in ratios))
    env = environment(code_copy("callback", precompiled=args.precompiled, source=args.source), "callback")
    tracer = [paired_ratio(python, TRACER_ONLY, env, pairs) for _ in range(sets)]
    print(f"  {'tracer':<10} " + "  ".join(f"{ratio:.2f}x" for ratio in tracer) + "  (Tracer alone)")
    floor = [paired_ratio(python, FLOOR, env, pairs) for _ in range(sets)]
    print(
        f"  {'floor':<10} "
        + "  ".join(f"{ratio:.2f}x" for ratio in floor)
        + "  (SDK client, Powertools Logger/Metrics/Tracer, pydantic's first model)"
    )
    if args.quick:
        return
    for function in args.functions:
        env = environment(
            code_copy(
                function, precompiled=args.precompiled, source=args.source, tracer=not args.without_tracer
            ),
            function,
        )
        rows = breakdown(python, function, env)
        print(
            f"  {function}: beyond the baseline (ms, -X importtime self times by package): "
            + ", ".join(f"{name} {ms:.0f}" for name, ms in rows[:8])
        )


if __name__ == "__main__":
    main()
