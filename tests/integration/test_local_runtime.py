"""Functions run by the local stack the way Lambda runs them: each instance a process with its own
environment and sys.path, a real timeout, errors reported as Lambda reports them, instances on demand."""

import itertools
import logging
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from local.emulators.runtime import WORKER_SCRIPT, FunctionConfig, FunctionInitError, FunctionRuntime
from local.emulators.scheduler import Scheduler, ScheduleSpec

HANDLER = textwrap.dedent(
    """\
    import decimal
    import os
    import sys
    import time

    from shared import GREETING  # from the layer

    LOADED_WITH = os.environ.get("ROLE")  # module-level code reads the environment at import

    def handler(event, context):
        action = event.get("action")
        if action == "fail":
            raise KeyError("missing-thing")
        if action == "sleep":
            time.sleep(event["seconds"])
        if action == "print":
            print("hello from the function", flush=True)
        if action == "decimal":
            return {"amount": decimal.Decimal("1.5")}
        if action == "object":
            return {"value": object()}
        return {
            "role": LOADED_WITH,
            "greeting": GREETING,
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "remaining": context.get_remaining_time_in_millis(),
            "request_id": context.aws_request_id,
            "function_name": context.function_name,
            "arn": context.invoked_function_arn,
            "local_on_path": any(p.endswith("/local") for p in sys.path),
            "aws_profile": os.environ.get("AWS_PROFILE"),
        }
    """
)


def make_function(
    tmp_path: Path, name: str, *, role: str, timeout: float = 3.0, concurrency: int = 2
) -> FunctionConfig:
    """A function `app.handler` in its own code dir, with a layer providing `shared`."""
    code = tmp_path / name
    code.mkdir()
    (code / "app.py").write_text(HANDLER)
    layer = tmp_path / f"{name}-layer"
    layer.mkdir()
    (layer / "shared.py").write_text(f'GREETING = "hello from {name}"\n')
    return FunctionConfig(
        logical_id=name,
        function_name=f"local-{name}",
        arn=f"arn:aws:lambda:eu-west-1:123456789012:function:local-{name}",
        handler="app.handler",
        code_dir=code,
        environment={"PATH": os.environ["PATH"], "ROLE": role, "PYTHONPATH": f"{code}:{layer}"},
        timeout=timeout,
        max_concurrency=concurrency,
    )


@pytest.fixture
def runtimes(tmp_path: Path):
    started: list[FunctionRuntime] = []

    def start(name: str, **kwargs) -> FunctionRuntime:
        runtime = FunctionRuntime(make_function(tmp_path, name, **kwargs))
        runtime.start()
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()


def test_each_function_gets_its_own_environment_code_and_layers_even_with_the_same_module_name(
    runtimes,
) -> None:
    first, second = runtimes("first", role="publisher"), runtimes("second", role="poller")

    one, two = first.invoke({}), second.invoke({})

    assert one.ok and two.ok
    assert (one.payload["role"], one.payload["greeting"]) == ("publisher", "hello from first")
    assert (two.payload["role"], two.payload["greeting"]) == ("poller", "hello from second")
    assert one.payload["pid"] != two.payload["pid"]
    assert one.payload["cwd"].endswith("/first")
    assert one.payload["local_on_path"] is False, "the stack's own package is not importable by functions"
    assert one.payload["aws_profile"] is None
    assert (one.payload["function_name"], one.payload["arn"]) == ("local-first", first.config.arn)
    assert one.payload["request_id"] == one.request_id


def test_the_context_counts_down_from_the_function_timeout(runtimes) -> None:
    runtime = runtimes("counting", role="x", timeout=2.0)
    remaining = runtime.invoke({}).payload["remaining"]
    assert 1000 < remaining <= 2000


def test_an_exception_is_reported_as_lambda_reports_it_and_the_instance_stays_warm(runtimes) -> None:
    runtime = runtimes("failing", role="x")
    pid = runtime.invoke({}).payload["pid"]

    result = runtime.invoke({"action": "fail"})

    assert not result.ok
    assert result.error is not None
    assert (result.error["errorType"], result.error["errorMessage"]) == ("KeyError", "'missing-thing'")
    assert any("missing-thing" in line for line in result.error["stackTrace"])
    assert runtime.invoke({}).payload["pid"] == pid


def test_a_timeout_kills_the_instance_and_the_next_invocation_starts_a_new_one(runtimes) -> None:
    runtime = runtimes("slow", role="x", timeout=0.5)
    pid = runtime.invoke({}).payload["pid"]

    result = runtime.invoke({"action": "sleep", "seconds": 30})

    assert result.error is not None
    assert result.error["errorType"] == "Sandbox.Timedout"
    assert "timed out after 0.50 seconds" in result.error["errorMessage"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    after = runtime.invoke({})
    assert after.ok and after.payload["pid"] != pid
    assert (runtime.stats.timeouts, runtime.stats.cold_starts) == (1, 2)


def test_results_are_serialised_as_lambda_does(runtimes) -> None:
    runtime = runtimes("results", role="x")
    assert runtime.invoke({"action": "decimal"}).payload == {"amount": 1.5}
    marshal = runtime.invoke({"action": "object"})
    assert marshal.error is not None and marshal.error["errorType"] == "Runtime.MarshalError"


def test_busy_instances_make_more_up_to_the_limit(runtimes) -> None:
    runtime = runtimes("parallel", role="x", concurrency=2, timeout=10.0)
    results = []

    def call() -> None:
        results.append(runtime.invoke({"action": "sleep", "seconds": 2.0}))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    # Watch the instances while the calls sleep (a loaded machine may take a while to start the second):
    # two come up, never a third.
    seen = set()
    while any(thread.is_alive() for thread in threads):
        seen.add(len(runtime.pids))
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    assert max(seen) == 2, seen  # the third call waited for one of the two instances
    assert all(result.ok for result in results)
    assert runtime.stats.cold_starts == 2


def test_a_function_that_cannot_import_fails_at_start_with_its_error(tmp_path: Path) -> None:
    config = make_function(tmp_path, "broken", role="x")
    (config.code_dir / "app.py").write_text("import not_a_module_anywhere\n")

    with pytest.raises(FunctionInitError, match="ImportModuleError: No module named 'not_a_module_anywhere'"):
        FunctionRuntime(config).start()


def test_stop_ends_every_instance(runtimes) -> None:
    runtime = runtimes("stopping", role="x")
    pid = runtime.invoke({}).payload["pid"]
    runtime.stop()
    time.sleep(0.1)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_function_output_is_relayed_to_the_stack_log(
    runtimes, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = runtimes("printing", role="x")
    monkeypatch.setattr(logging.getLogger("local"), "propagate", True)  # to where caplog listens
    with caplog.at_level(logging.INFO, logger="local.fn.printing"):
        runtime.invoke({"action": "print"})
        deadline = time.monotonic() + 5
        while "hello from the function" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "hello from the function" in caplog.text


def test_the_scheduler_invokes_on_the_interval_with_a_counting_down_context(runtimes) -> None:
    runtime = runtimes("ticker", role="x", timeout=5.0)
    seen = []

    def invoke(function: str, event):
        result = runtime.invoke(event)
        seen.append((function, event["source"], result.payload["remaining"], time.monotonic()))
        return result

    scheduler = Scheduler(
        [ScheduleSpec("ticker", "Tick", "ScheduleV2", "rate(1 minute)")], invoke, interval=0.3
    )
    scheduler.start()
    time.sleep(1.45)
    scheduler.stop()

    assert 3 <= len(seen) <= 5
    assert all(function == "ticker" and source == "aws.scheduler" for function, source, _, _ in seen)
    assert all(4000 < remaining <= 5000 for _, _, remaining, _ in seen)
    gaps = [b[3] - a[3] for a, b in itertools.pairwise(seen)]
    assert all(gap >= 0.25 for gap in gaps)
    assert scheduler.runs == {"ticker.Tick": len(seen)}


def test_the_worker_script_uses_nothing_from_this_repository() -> None:
    source = WORKER_SCRIPT.read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert all(line.split()[1].split(".")[0] in sys.stdlib_module_names for line in imports), imports
