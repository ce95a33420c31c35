"""The local stack's and the simulator's command lines: options become the configuration they name."""

import pytest

from local.klarna_simulator.cli import build_parser as simulator_parser
from local.klarna_simulator.cli import config_from_args
from local.stack.cli import build_parser, main, options_from_args


def test_stack_options() -> None:
    args = build_parser().parse_args(
        [
            "--port", "0", "--klarna-url", "https://api.playground.klarna.com", "--poll-interval", "2.5",
            "--param", "LogLevel=DEBUG", "--env", "FIRST_POLL_DELAY_SECONDS=2", "--concurrency", "4",
            "--aws-faults", "default", "--aws-fault-set", "dynamodb_throttle_rate=0.5",
            "--seed", "9", "--chaos", "heavy", "--chaos-set", "callback_drop_rate=0", "--journeys", "manual",
            "--session-lifetime", "30", "--think-time", "0.1:0.2", "--callback-retry-delay", "0.5",
        ]
    )  # fmt: skip
    options = options_from_args(args)

    assert (options.port, options.klarna_url, options.poll_interval, options.concurrency) == (
        0,
        "https://api.playground.klarna.com",
        2.5,
        4,
    )
    assert options.parameters == {"LogLevel": "DEBUG"}
    assert options.environment == {"FIRST_POLL_DELAY_SECONDS": "2"}
    assert (options.aws_faults.dynamodb_throttle_rate, options.aws_faults.put_events_failure_rate) == (
        0.5,
        0.05,
    )
    assert options.aws_faults.seed == 9
    simulator = options.simulator
    assert (simulator.seed, simulator.journeys, simulator.session_lifetime) == (9, "manual", 30.0)
    assert (simulator.chaos.name, simulator.chaos.callback_drop_rate) == ("heavy+custom", 0.0)
    assert (simulator.think_time, simulator.callback_retry_delay) == ((0.1, 0.2), 0.5)


def test_stack_defaults_match_the_docs() -> None:
    options = options_from_args(build_parser().parse_args([]))
    assert (options.port, options.poll_interval, options.concurrency, options.klarna_url) == (
        3000,
        10.0,
        2,
        None,
    )
    assert not options.aws_faults.active
    assert (options.simulator.chaos.name, options.simulator.journeys) == ("none", "auto")


@pytest.mark.parametrize(
    "argv",
    [
        ["--aws-fault-set", "throttle=1"],
        ["--chaos-set", "drop=1"],
        ["--param", "novalue"],
        ["--think-time", "a:b"],
    ],
)
def test_bad_stack_options_are_refused(argv: list[str]) -> None:
    with pytest.raises((SystemExit, ValueError)):
        options_from_args(build_parser().parse_args(argv))


def test_simulator_options() -> None:
    args = simulator_parser().parse_args(
        ["--seed", "3", "--chaos", "default", "--create-rate-limit", "5", "--rate-limit", "50",
         "--callback-attempts", "2", "--merchant-disable-url", "http://127.0.0.1:1/prod/sessions/{session_id}"]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.seed, config.chaos.name, config.create_rate_limit, config.other_rate_limit) == (
        3,
        "default",
        5,
        50,
    )
    assert config.callback_attempts == 2
    assert config.merchant_disable_url == "http://127.0.0.1:1/prod/sessions/{session_id}"


def test_a_template_that_cannot_be_read_is_refused_before_anything_starts(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "list.yaml").write_text("- not a mapping\n")
    for template, problem in [("missing.yaml", "No such file"), ("list.yaml", "is not a YAML mapping")]:
        with pytest.raises(SystemExit) as exited:
            main(["--template", str(tmp_path / template)])
        assert exited.value.code == 2
        assert problem in capsys.readouterr().err
