"""`make deploy` and `make delete` without AWS: the Makefile's own recipes run, with a stand-in for the
tools venv's SAM CLI that records how it is called (and plays SAM's part: the guided deploy saves its
answers in the config file, `list stack-outputs` answers with the stack's outputs).

What this cannot show is that AWS accepts the deployment: `make lint` validates the template (`sam
validate --lint`, cfn-lint) and `make build` builds it, without an account.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hpp-tracker/klarna-AbCdEf"
TABLE = "hpp-tracker-SessionsTable-1A2B3C4D5E6F"

# The stand-in SAM CLI: every call appended to calls.jsonl; SAM's side effects the recipes rely on.
FAKE_SAM = textwrap.dedent(
    f"""\
    #!{sys.executable}
    import json, os, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_SAM_CALLS"], "a") as calls:
        calls.write(json.dumps(args) + "\\n")
    if args[:1] == ["build"]:  # what sam build leaves: the functions' code, as sources
        built = os.path.join(os.environ["FAKE_SAM_BUILD_DIR"], "CallbackFunction")
        os.makedirs(built, exist_ok=True)
        open(os.path.join(built, "callback.py"), "w").write("ANSWER = 42\\n")
    if args[:1] == ["deploy"] and "--guided" in args:
        config = args[args.index("--config-file") + 1]
        with open(config, "a") as saved:  # what the guided deploy saves
            saved.write('parameter_overrides = "KlarnaCredentialsSecretArn={SECRET_ARN}"\\n')
    if args[:2] == ["list", "stack-outputs"]:
        print(json.dumps([{{"OutputKey": "SessionsTableName", "OutputValue": "{TABLE}"}},
                          {{"OutputKey": "ApiUrl", "OutputValue": "https://x.execute-api.eu-west-1.amazonaws.com/prod"}}]))
    """
)


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A tools venv as `make tools` leaves it (its stamp newer than requirements-tools.txt), holding the
    stand-in `sam` and a Python 3.13."""
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    sam = tools / "bin" / "sam"
    sam.write_text(FAKE_SAM)
    sam.chmod(0o755)
    (tools / "bin" / "python").symlink_to(sys.executable)
    (tools / ".python3.13").touch()
    (tools / ".requirements-tools.stamp").touch()
    return tools


def make(target: str, tools: Path, config: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    build_dir = config.parent / "build"
    variables = [
        f"TOOLS={tools}",
        f"SAMCONFIG={config}",
        f"SAM_BUILD_DIR={build_dir}",
        *(f"{k}={v}" for k, v in extra.items()),
    ]
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO_ROOT), target, *variables],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "FAKE_SAM_CALLS": str(config.parent / "calls.jsonl"),
            "FAKE_SAM_BUILD_DIR": str(build_dir),
        },
    )


def calls(config: Path) -> list[list[str]]:
    log = config.parent / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def config(tmp_path: Path) -> Path:
    copied = tmp_path / "samconfig.toml"
    shutil.copy(REPO_ROOT / "samconfig.toml", copied)
    return copied


def test_the_first_deploy_is_guided_and_the_next_ones_ask_nothing(tools: Path, config: Path) -> None:
    first = make("deploy", tools, config)
    assert first.returncode == 0, first.stderr
    build, guided = calls(config)
    assert build[:3] == ["build", "--template", "template.yaml"] and build[-2:] == [
        "--config-file",
        str(config),
    ]
    assert guided == ["deploy", "--config-file", str(config), "--guided"]
    # The build is shipped compiled: each module with its python3.13 bytecode, used without a source check.
    built = config.parent / "build" / "CallbackFunction" / "callback.py"
    pyc = Path(importlib.util.cache_from_source(str(built)))
    assert pyc.is_file() and "have their python3.13 .pyc" in first.stdout
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01  # hash-based, unchecked (PEP 552)
    assert "first deployment" in first.stdout
    assert "hpp-tracker check --stack hpp-tracker --region eu-west-1" in first.stdout

    again = make("deploy", tools, config)
    assert again.returncode == 0, again.stderr
    *_, deploy = calls(config)
    assert deploy == [
        "deploy",
        "--config-file",
        str(config),
        "--no-confirm-changeset",
        "--no-fail-on-empty-changeset",
    ]


def test_delete_asks_sam_and_names_what_it_keeps(tools: Path, config: Path) -> None:
    result = make("delete", tools, config)
    assert result.returncode == 0, result.stderr
    outputs, delete = calls(config)
    assert outputs == [
        "list",
        "stack-outputs",
        "--stack-name",
        "hpp-tracker",
        "--region",
        "eu-west-1",
        "--output",
        "json",
    ]
    # No --no-prompts: SAM asks before it deletes anything.
    assert delete == [
        "delete",
        "--stack-name",
        "hpp-tracker",
        "--region",
        "eu-west-1",
        "--config-file",
        str(config),
    ]
    assert f"Kept: the sessions table {TABLE}" in result.stdout
    unprotect = (
        f"aws dynamodb update-table --region eu-west-1 --table-name {TABLE} --no-deletion-protection-enabled"
    )
    remove = f"aws dynamodb delete-table --region eu-west-1 --table-name {TABLE}"
    assert unprotect in result.stdout, "the table's deletion protection refuses delete-table until it is off"
    assert result.stdout.index(unprotect) < result.stdout.index(remove)
    assert "aws secretsmanager delete-secret" in result.stdout


def test_delete_takes_another_stack_and_region(tools: Path, config: Path) -> None:
    result = make("delete", tools, config, STACK="hpp-staging", REGION="eu-north-1")
    assert result.returncode == 0, result.stderr
    (_, delete) = calls(config)
    assert delete[:5] == ["delete", "--stack-name", "hpp-staging", "--region", "eu-north-1"]


def test_the_makefile_uses_the_tools_venvs_sam_by_default() -> None:
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(REPO_ROOT), "deploy", "delete"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ".venv-tools/bin/sam deploy --config-file samconfig.toml --guided" in dry_run.stdout
    assert ".venv-tools/bin/sam delete --stack-name" in dry_run.stdout
