"""Every function logs to its own log group with retention, in the format and at the level set once.

This is what cfn-lint's WS1004 would check, in the form the template uses (the template says why WS1004
itself is suppressed): a log group named in LoggingConfig, so it exists before the function does.
"""

from typing import Any

import pytest
from aws_lambda_powertools.shared.constants import LAMBDA_ADVANCED_LOGGING_LEVELS

from local.template import load_template

# LoggingConfig.ApplicationLogLevel's valid values (Lambda API reference, LoggingConfig).
LAMBDA_APPLICATION_LOG_LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resources = template["Resources"]
    found = {
        name: resource["Properties"]
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert found, "the template has no functions"
    return found


def test_every_function_names_its_own_log_group_with_the_configured_retention(template) -> None:
    resources = template["Resources"]
    log_groups = set()
    for name, properties in functions(template).items():
        reference = (properties.get("LoggingConfig") or {}).get("LogGroup")
        assert isinstance(reference, dict) and set(reference) == {"Ref"}, f"{name}: LoggingConfig.LogGroup"
        log_group = resources[reference["Ref"]]
        assert log_group["Type"] == "AWS::Logs::LogGroup", name
        assert log_group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}, name
        # Named per stack, so two stacks in one account never share (or collide on) a log group.
        assert "${AWS::StackName}" in log_group["Properties"]["LogGroupName"]["Fn::Sub"], name
        log_groups.add(reference["Ref"])
    assert len(log_groups) == len(functions(template)), "two functions share a log group"


def test_log_format_and_level_are_set_once_in_globals(template) -> None:
    assert template["Globals"]["Function"]["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": {"Fn::FindInMap": ["LambdaLogLevel", {"Ref": "LogLevel"}, "Name"]},
    }
    assert template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_LOG_LEVEL"] == {
        "Ref": "LogLevel"
    }
    for name, properties in functions(template).items():
        assert set(properties["LoggingConfig"]) == {"LogGroup"}, f"{name} overrides the global LoggingConfig"


def test_every_log_level_is_one_lambda_accepts_and_powertools_reads_back_as_the_same_level(template) -> None:
    allowed = template["Parameters"]["LogLevel"]["AllowedValues"]
    mapping = template["Mappings"]["LambdaLogLevel"]
    assert set(mapping) == set(allowed)
    for level in allowed:
        lambda_level = mapping[level]["Name"]
        # An unknown value makes the deployment fail (e.g. WARNING: Lambda says WARN).
        assert lambda_level in LAMBDA_APPLICATION_LOG_LEVELS, level
        # Powertools takes Lambda's level over POWERTOOLS_LOG_LEVEL: both must say the same.
        assert LAMBDA_ADVANCED_LOGGING_LEVELS[lambda_level] == level
