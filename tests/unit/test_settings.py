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
    [("KLARNA_API_URL", "not a url"), ("KLARNA_TIMEOUT_SECONDS", "soon"), ("POLL_SHARDS", "0")],
)
def test_malformed_variables_are_named_without_their_value(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_environment({**VALID, name: value})
    assert name in str(caught.value)
    assert value not in str(caught.value)
