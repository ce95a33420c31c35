"""The template's operational signals as data: its alarms, its dashboard (rendered as CloudFormation would
render it) and every metric they watch, for the tests that hold them against the runbook and the code."""

import json
import re
from dataclasses import dataclass
from typing import Any

from local.template import load_template

TRACKER_NAMESPACE = "HppTracker"
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


@dataclass(frozen=True)
class Metric:
    """One metric a signal watches: its namespace, name and dimensions (values as the template has them:
    a literal, or an intrinsic function rendered as text)."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        dims = ", ".join(f"{key}={value}" for key, value in self.dimensions)
        return f"{self.namespace}/{self.name} [{dims}]"


def template() -> dict[str, Any]:
    return load_template()


def alarms(document: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    resources = (document or template())["Resources"]
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def _text(value: Any) -> str:
    """A dimension value as text: a literal as it is, `!Ref X` as `X`, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return str(value["Ref"])
    return json.dumps(value, sort_keys=True)


def _dimensions(items: list[dict[str, Any]] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((item["Name"], _text(item["Value"])) for item in items or []))


def alarm_metrics(properties: dict[str, Any]) -> list[Metric]:
    """The metrics an alarm watches: its one metric, or every MetricStat of its metric math."""
    if "MetricName" in properties:
        return [
            Metric(
                properties["Namespace"], properties["MetricName"], _dimensions(properties.get("Dimensions"))
            )
        ]
    watched = []
    for query in properties.get("Metrics", []):
        if "MetricStat" in query:
            metric = query["MetricStat"]["Metric"]
            watched.append(
                Metric(metric["Namespace"], metric["MetricName"], _dimensions(metric.get("Dimensions")))
            )
    return watched


def rendered_dashboard(document: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dashboard's body with `${...}` filled in as CloudFormation would: a Number parameter by its
    default, a resource or other parameter by its name (`${X}` -> `X`, `${X.Attr}` -> `X.Attr`)."""
    document = document or template()
    body = document["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    parameters = document.get("Parameters") or {}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        parameter = parameters.get(name)
        if parameter is not None and parameter.get("Type") == "Number":
            return str(parameter["Default"])
        return name

    rendered: dict[str, Any] = json.loads(_SUB_VARIABLE.sub(value, body))
    return rendered


def dashboard_metrics(dashboard: dict[str, Any] | None = None) -> list[Metric]:
    """Every metric a dashboard widget draws (expressions draw the metrics they name, listed too)."""
    watched = []
    for widget in (dashboard or rendered_dashboard())["widgets"]:
        for row in widget.get("properties", {}).get("metrics", []):
            if row and isinstance(row[0], str):
                names = [item for item in row if isinstance(item, str)]
                pairs = tuple(sorted(zip(names[2::2], names[3::2], strict=True)))
                watched.append(Metric(names[0], names[1], pairs))
    return watched


def tracker_metrics() -> set[Metric]:
    """Every metric in the tracker's own namespace that an alarm or the dashboard watches."""
    document = template()
    watched = [metric for properties in alarms(document).values() for metric in alarm_metrics(properties)]
    watched += dashboard_metrics(rendered_dashboard(document))
    return {metric for metric in watched if metric.namespace == TRACKER_NAMESPACE}
