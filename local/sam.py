"""What the local stack reads from template.yaml: functions (with SAM's Globals merged in), their events,
the resources they use, and CloudFormation's intrinsic functions resolved to local values.

Generic on purpose: a function, table, queue or bus added to the template runs locally without a change
here. Resources the stack does not emulate still resolve (`!Ref` gives a placeholder) so a function whose
environment mentions one can start; the stack logs which ones.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.template import TEMPLATE_PATH, TemplateError, load_template

FUNCTION_TYPE = "AWS::Serverless::Function"
LAYER_TYPE = "AWS::Serverless::LayerVersion"
API_TYPE = "AWS::Serverless::Api"
TABLE_TYPE = "AWS::DynamoDB::Table"
QUEUE_TYPE = "AWS::SQS::Queue"
BUS_TYPE = "AWS::Events::EventBus"
ARCHIVE_TYPE = "AWS::Events::Archive"
RULE_TYPE = "AWS::Events::Rule"
SECRET_TYPE = "AWS::SecretsManager::Secret"
LOG_GROUP_TYPE = "AWS::Logs::LogGroup"
IMPLICIT_API = "ServerlessRestApi"  # the API SAM creates for Api events without a RestApiId

# SAM's Globals.Function keys that apply to every function (the ones this stack uses).
_GLOBAL_KEYS = (
    "Runtime",
    "Timeout",
    "MemorySize",
    "Layers",
    "Environment",
    "Handler",
    "CodeUri",
    "LoggingConfig",
)


class _NoValue:
    """AWS::NoValue: the property it is given to disappears."""


NO_VALUE = _NoValue()


@dataclass(frozen=True)
class EventSpec:
    name: str
    type: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    """An AWS::Serverless::Function with Globals merged in; values still unresolved."""

    logical_id: str
    properties: dict[str, Any]
    events: tuple[EventSpec, ...]

    @property
    def handler(self) -> str:
        return str(self.properties.get("Handler", ""))

    @property
    def timeout(self) -> float:
        return float(self.properties.get("Timeout", 3))  # Lambda's default

    @property
    def memory_size(self) -> int:
        return int(self.properties.get("MemorySize", 128))

    def events_of(self, *types: str) -> list[EventSpec]:
        return [event for event in self.events if event.type in types]


@dataclass
class Template:
    """template.yaml as data, with helpers to find resources by type and resolve values."""

    document: dict[str, Any]
    path: Path = TEMPLATE_PATH

    @classmethod
    def load(cls, path: Path = TEMPLATE_PATH) -> Template:
        return cls(load_template(path), path)

    @property
    def root(self) -> Path:
        return self.path.resolve().parent

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.document.get("Resources") or {}
        return resources

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: res for name, res in self.resources.items() if res.get("Type") == resource_type}

    def properties(self, logical_id: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.resources[logical_id].get("Properties") or {}
        return properties

    def functions(self) -> list[FunctionSpec]:
        """Every AWS::Serverless::Function, with Globals.Function merged as SAM merges them."""
        globals_ = ((self.document.get("Globals") or {}).get("Function")) or {}
        specs = []
        for logical_id, resource in self.of_type(FUNCTION_TYPE).items():
            properties = _merge_globals(globals_, resource.get("Properties") or {})
            events = tuple(
                EventSpec(name, str(event.get("Type")), dict(event.get("Properties") or {}))
                for name, event in (properties.get("Events") or {}).items()
            )
            specs.append(FunctionSpec(logical_id, properties, events))
        return specs

    def api_properties(self, logical_id: str) -> dict[str, Any]:
        """An AWS::Serverless::Api's properties with Globals.Api merged in (implicit API: Globals only)."""
        globals_ = ((self.document.get("Globals") or {}).get("Api")) or {}
        own = self.properties(logical_id) if logical_id in self.resources else {}
        return _merge_maps(globals_, own)

    def layer_path(self, logical_id: str) -> Path:
        """Where a layer's code is, as Lambda would put it on sys.path (SAM builds `python/` from it)."""
        content = self.properties(logical_id).get("ContentUri")
        if not isinstance(content, str):
            raise TemplateError(f"{logical_id}: ContentUri must be a local path to run it locally")
        path = self.root / content
        return path / "python" if (path / "python").is_dir() else path


def _merge_globals(globals_: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's rules: maps merge (the function wins), lists append (globals first), scalars override."""
    merged = copy.deepcopy(dict(properties))
    for key in _GLOBAL_KEYS:
        if key not in globals_:
            continue
        value = copy.deepcopy(globals_[key])
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _merge_maps(value, merged[key])
        elif isinstance(value, list) and isinstance(merged[key], list):
            merged[key] = value + merged[key]
    return merged


def _merge_maps(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not _is_intrinsic(value):
            merged[key] = _merge_maps(merged[key], value)
        else:
            merged[key] = value
    return merged


def _is_intrinsic(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) == 1
        and (next(iter(value)) == "Ref" or next(iter(value)).startswith("Fn::"))
    )


# ------------------------------------------------------------------------------------- resolution


@dataclass
class LocalValues:
    """What each logical id stands for locally: its `!Ref` value and its `!GetAtt` attributes."""

    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    placeholders: set[str] = field(default_factory=set)  # logical ids the stack does not emulate


class Resolver:
    """Resolves !Ref, !GetAtt, !Sub, !Join, !Select, !Split, !If (with Conditions), !FindInMap."""

    _SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")

    def __init__(
        self,
        template: Template,
        *,
        parameters: Mapping[str, str],
        pseudo: Mapping[str, str],
        values: LocalValues,
    ) -> None:
        self.template = template
        self.parameters = dict(parameters)
        self.pseudo = dict(pseudo)
        self.values = values
        self._conditions: dict[str, bool] = {}

    def parameter(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        declared = (self.template.document.get("Parameters") or {}).get(name)
        if declared is None:
            raise TemplateError(f"!Ref {name}: no such parameter or resource")
        if "Default" not in declared:
            raise TemplateError(f"parameter {name} has no default: give it a value (--param {name}=...)")
        return _as_string(declared["Default"])

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            key, argument = next(iter(value.items()))
            if key == "Ref":
                return self._ref(argument)
            if key.startswith("Fn::") or key == "Condition":
                return self._function(key, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.document.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"no condition {name!r}")
            self._conditions[name] = bool(self._evaluate(conditions[name]))
        return self._conditions[name]

    # ---------------------------------------------------------------------------------- internal

    def _ref(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise TemplateError(f"!Ref needs a name, not {name!r}")
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.values.refs:
            return self.values.refs[name]
        if name in self.template.resources:
            raise TemplateError(f"!Ref {name}: the local stack has no value for it yet")
        return self.parameter(name)

    def _get_att(self, argument: Any) -> str:
        if isinstance(argument, str):
            argument = argument.split(".", 1)
        logical_id, attribute = (self.resolve(part) for part in argument)
        try:
            return self.values.attributes[logical_id][attribute]
        except KeyError:
            raise TemplateError(f"!GetAtt {logical_id}.{attribute}: no local value for it") from None

    def _function(self, key: str, argument: Any) -> Any:  # noqa: PLR0911 - one branch per function
        match key:
            case "Fn::GetAtt":
                return self._get_att(argument)
            case "Fn::Sub":
                return self._sub(argument)
            case "Fn::Join":
                separator, items = argument
                return str(separator).join(_as_string(item) for item in self.resolve(items))
            case "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            case "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(str(separator))
            case "Fn::If":
                name, if_true, if_false = argument
                return self.resolve(if_true if self.condition(name) else if_false)
            case "Fn::FindInMap":
                name, top, second = (self.resolve(part) for part in argument[:3])
                return self.template.document["Mappings"][name][top][second]
            case "Fn::Equals" | "Fn::And" | "Fn::Or" | "Fn::Not" | "Condition":
                return self._evaluate({key: argument})
        raise TemplateError(f"{key} is not supported by the local stack")

    def _evaluate(self, expression: Any) -> bool | Any:
        if isinstance(expression, dict) and len(expression) == 1:
            key, argument = next(iter(expression.items()))
            match key:
                case "Fn::Equals":
                    left, right = (_as_string(self.resolve(side)) for side in argument)
                    return left == right
                case "Fn::And":
                    return all(self._evaluate(item) for item in argument)
                case "Fn::Or":
                    return any(self._evaluate(item) for item in argument)
                case "Fn::Not":
                    return not self._evaluate(argument[0])
                case "Condition":
                    return self.condition(argument)
        return self.resolve(expression)

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], {k: self.resolve(v) for k, v in (argument[1] or {}).items()}
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} stays literal
            if name in variables:
                return _as_string(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self._get_att(name.split(".", 1))
            return _as_string(self._ref(name))

        return self._SUB_VARIABLE.sub(replace, str(text))


def _as_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def environment_strings(variables: Mapping[str, Any]) -> dict[str, str]:
    """Lambda environment values are strings (CloudFormation turns numbers and booleans into them)."""
    return {name: _as_string(value) for name, value in variables.items() if value is not NO_VALUE}
