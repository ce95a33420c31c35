"""The template's alarms, dashboard and saved queries, held against the runbook and the rest of the
template: every alarm names a runbook section that exists, every function is watched for errors and
throttles, the API's metrics name the API and routes the template has, the dashboard renders to JSON and
shows every alarm, and the operator's role is the only other principal the bus lets use the source."""

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.operations import alarm_metrics, alarms, dashboard_metrics, rendered_dashboard, template
from tests.unit.test_docs_links import anchors

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
RUNBOOK_LINK = re.compile(r"Runbook:\s+docs/runbook\.md#([a-z0-9-]+)")
FUNCTIONS = ["CallbackFunction", "SessionsFunction", "PublisherFunction", "PollerFunction"]


def resources_of(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template()["Resources"].items() if r["Type"] == kind}


@pytest.mark.parametrize("alarm", sorted(alarms()))
def test_every_alarm_names_a_runbook_section_that_exists(alarm: str) -> None:
    description = " ".join(alarms()[alarm]["AlarmDescription"].split())
    links = RUNBOOK_LINK.findall(description)
    assert len(links) == 1, f"{alarm}: its description must end with 'Runbook: docs/runbook.md#section'"
    assert links[0] in anchors(RUNBOOK.read_text(encoding="utf-8")), f"{alarm}: no section #{links[0]}"


def runbook_sections() -> dict[str, str]:
    """The runbook's `## ` sections by their anchor (GitHub's slug of the heading)."""
    sections: dict[str, str] = {}
    for part in re.split(r"^## ", RUNBOOK.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition("\n")
        (slug,) = anchors(f"## {heading}")
        sections[slug] = body
    return sections


@pytest.mark.parametrize("alarm", sorted(alarms()))
def test_the_runbook_section_an_alarm_names_says_it_is_for_that_alarm(alarm: str) -> None:
    (link,) = RUNBOOK_LINK.findall(" ".join(alarms()[alarm]["AlarmDescription"].split()))
    assert f"`{alarm}`" in runbook_sections()[link]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_every_function_has_an_errors_and_a_throttles_alarm(function: str, metric: str) -> None:
    watching = [
        name
        for name, properties in alarms().items()
        for watched in alarm_metrics(properties)
        if watched.namespace == "AWS/Lambda"
        and watched.name == metric
        and watched.dimensions == (("FunctionName", function),)
    ]
    assert watching == [f"{function}{metric}Alarm"]
    assert set(FUNCTIONS) == set(resources_of("AWS::Serverless::Function")), "a new function needs alarms"


def api_routes() -> set[tuple[str, str]]:
    return {
        (event["Properties"]["Path"], event["Properties"]["Method"].upper())
        for function in resources_of("AWS::Serverless::Function").values()
        for event in (function["Properties"].get("Events") or {}).values()
        if event["Type"] == "Api" and event["Properties"]["RestApiId"] == {"Ref": "Api"}
    }


def test_api_gateway_metrics_name_the_api_its_stage_and_a_route_it_has() -> None:
    api = template()["Resources"]["Api"]["Properties"]
    assert api["Name"] == {"Ref": "AWS::StackName"}, "the metrics' ApiName is the API's Name"
    watched = [m for p in alarms().values() for m in alarm_metrics(p)] + dashboard_metrics()
    api_metrics = [metric for metric in watched if metric.namespace == "AWS/ApiGateway"]
    assert api_metrics
    routes = api_routes()
    for metric in api_metrics:
        dims = dict(metric.dimensions)
        assert dims["ApiName"] in ("AWS::StackName",), metric
        assert dims["Stage"] == "Stage", metric
        if "Resource" in dims:
            assert (dims["Resource"], dims["Method"]) in routes, metric


def test_the_dashboard_renders_to_json_and_shows_every_alarm() -> None:
    dashboard = rendered_dashboard()
    (alarm_widget,) = [widget for widget in dashboard["widgets"] if widget["type"] == "alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(f"{name}.Arn" for name in alarms())
    assert all(
        widget["width"] <= 24 and widget["x"] + widget["width"] <= 24 for widget in dashboard["widgets"]
    )


def test_the_dashboard_shows_the_callback_latency_against_klarnas_three_seconds() -> None:
    (latency,) = [w for w in rendered_dashboard()["widgets"] if "latency" in w["properties"].get("title", "")]
    lines = {line["label"]: line["value"] for line in latency["properties"]["annotations"]["horizontal"]}
    assert lines["Klarna gives up"] == 3000
    assert lines["alarm"] == template()["Parameters"]["CallbackLatencyAlarmMilliseconds"]["Default"]


def referenced(value: Any) -> set[str]:
    """Every name a piece of the template refers to (!Ref, ${...} in !Sub)."""
    if isinstance(value, dict):
        found = {value["Ref"]} if "Ref" in value and isinstance(value["Ref"], str) else set()
        sub = value.get("Fn::Sub")
        if isinstance(sub, str):
            found |= set(re.findall(r"\$\{([^}.!]+)", sub))
        return found | {name for item in value.values() for name in referenced(item)}
    if isinstance(value, list):
        return {name for item in value for name in referenced(item)}
    return set()


def test_every_alarm_threshold_parameter_is_used_and_named_by_an_alarm() -> None:
    document = template()
    thresholds = {name for name in document["Parameters"] if "Alarm" in name} - {"AlarmTopicArn"}
    assert {"PollerLagAlarmSeconds", "CallbackLatencyAlarmMilliseconds"} <= thresholds
    assert thresholds <= referenced(alarms(document))
    descriptions = " ".join(" ".join(p["AlarmDescription"].split()) for p in alarms(document).values())
    assert [name for name in sorted(thresholds) if name not in descriptions] == []


def test_the_saved_queries_read_every_functions_log_group() -> None:
    queries = {
        r["Properties"]["Name"]["Fn::Sub"]: r["Properties"]
        for r in resources_of("AWS::Logs::QueryDefinition").values()
    }
    assert set(queries) == {
        "${AWS::StackName}/session-history",
        "${AWS::StackName}/failures-by-kind",
        "${AWS::StackName}/slowest-callbacks",
    }
    every_function = [{"Ref": f"{function}LogGroup"} for function in FUNCTIONS]
    assert queries["${AWS::StackName}/session-history"]["LogGroupNames"] == every_function
    assert queries["${AWS::StackName}/failures-by-kind"]["LogGroupNames"] == every_function
    assert "session_id" in queries["${AWS::StackName}/session-history"]["QueryString"]


def test_only_the_publisher_and_the_operator_role_may_use_the_trackers_source() -> None:
    statement = template()["Resources"]["EventBusPolicy"]["Properties"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == [
        {"Fn::GetAtt": ["PublisherFunctionRole", "Arn"]},
        {"Fn::GetAtt": ["OperatorRole", "Arn"]},
    ]
