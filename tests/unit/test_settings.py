import pytest

from hpp_core.settings import ConfigurationError, Settings

VALID = {
    "TABLE_NAME": "hpp-sessions",
    "KLARNA_API_URL": "https://api.playground.klarna.com/",
    "KLARNA_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:klarna-AbCdEf",
}


def test_valid_environment() -> None:
    settings = Settings.from_environment(VALID)
    assert settings.table_name == "hpp-sessions"
    assert settings.klarna_base_url == "https://api.playground.klarna.com"
    assert settings.klarna_timeout_seconds < 3, "a Read Session inside a callback must fit Klarna's 3 s"


def test_missing_variables_are_named() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_environment({"TABLE_NAME": "hpp-sessions"})
    assert "KLARNA_API_URL" in str(caught.value)
    assert "KLARNA_CREDENTIALS_SECRET_ARN" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KLARNA_API_URL", "not a url"),
        ("KLARNA_TIMEOUT_SECONDS", "soon"),
        ("POLL_SHARDS", "0"),
        ("AWS_CALL_READ_TIMEOUT_SECONDS", "-1"),
        ("AWS_CALL_ATTEMPTS", "0"),
    ],
)
def test_malformed_variables_are_named_without_their_value(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_environment({**VALID, name: value})
    assert name in str(caught.value)
    assert value not in str(caught.value)


@pytest.mark.parametrize(
    ("budget", "longest_call"),
    [
        ({}, 3 * (0.5 + 1.0) + 1 + 2),  # the default: three attempts, 1 s and 2 s of backoff when throttled
        (
            {
                "AWS_CALL_CONNECT_TIMEOUT_SECONDS": "0.2",
                "AWS_CALL_READ_TIMEOUT_SECONDS": "0.3",
                "AWS_CALL_ATTEMPTS": "1",
            },
            0.5,
        ),
        ({"AWS_CALL_ATTEMPTS": "2", "AWS_CALL_READ_TIMEOUT_SECONDS": "0.6"}, 2 * (0.5 + 0.6) + 1),
    ],
)
def test_an_aws_call_budget_says_how_long_one_call_can_take_and_configures_botocore(
    budget: dict[str, str], longest_call: float
) -> None:
    settings = Settings.from_environment({**VALID, **budget})
    assert settings.aws_call_seconds == pytest.approx(longest_call)
    config = vars(settings.aws_call_config())  # botocore's Config sets its options as attributes
    assert config["connect_timeout"] == settings.aws_call_connect_timeout_seconds
    assert config["read_timeout"] == settings.aws_call_read_timeout_seconds
    assert config["retries"] == {"mode": "standard", "total_max_attempts": settings.aws_call_attempts}
