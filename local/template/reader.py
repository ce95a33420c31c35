"""template.yaml as data: its resources by type, and its functions and APIs with SAM's Globals merged in.

The one reader of the template: the local stack, the stream mapping, the table definitions and the tests
all go through `Template`, so what they see of a function is what SAM deploys. Generic on purpose: a
function, table, queue or bus added to the template runs locally without a change here.

SAM's own merge (samtranslator's `Globals`) lives in aws-sam-translator, which only the tools virtualenv
has (its pins clash with the runtime's); its rules are small and are reproduced here, and a test checks
them against samtranslator itself.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"

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

# Where SAM takes the resource's value as it is instead of merging it with the Globals' (samtranslator's
# CUSTOM_STRATEGIES for the sections read here).
_REPLACED = frozenset({("Function", "Architectures")})


class TemplateError(ValueError):
    """The template lacks what was asked for, or holds it in a form that cannot be resolved locally."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation's short-form tags (!Ref, !GetAtt, !Sub, ...)."""


def _construct_intrinsic(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    # !Ref and !Condition keep their names; every other tag is a function: !Sub -> {"Fn::Sub": ...}.
    key = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":  # short form "Resource.Attribute" is the list form's two items
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {key: value}


_CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """The template as plain data, short-form tags turned into their long (JSON) form."""
    with path.open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(document, dict):
        raise TemplateError(f"{path} is not a YAML mapping")
    return document


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
    """template.yaml as data, with helpers to find resources by type and to see them as SAM does."""

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

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        parameters: dict[str, dict[str, Any]] = self.document.get("Parameters") or {}
        return parameters

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: res for name, res in self.resources.items() if res.get("Type") == resource_type}

    def resource(self, logical_id: str, resource_type: str) -> dict[str, Any]:
        """The resource `logical_id`, which must be of `resource_type`."""
        resource = self.resources.get(logical_id)
        if resource is None:
            raise TemplateError(f"no resource {logical_id!r} in the template")
        if resource.get("Type") != resource_type:
            raise TemplateError(f"{logical_id} is a {resource.get('Type')}, not an {resource_type}")
        return resource

    def properties(self, logical_id: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.resources[logical_id].get("Properties") or {}
        return properties

    def functions(self) -> list[FunctionSpec]:
        """Every AWS::Serverless::Function, with Globals.Function merged as SAM merges them."""
        return [self._function_spec(logical_id) for logical_id in self.of_type(FUNCTION_TYPE)]

    def function(self, logical_id: str) -> FunctionSpec:
        self.resource(logical_id, FUNCTION_TYPE)
        return self._function_spec(logical_id)

    def api_ids(self) -> list[str]:
        """The REST APIs SAM deploys: every AWS::Serverless::Api, and its implicit API if an Api event
        names no RestApiId."""
        implicit = any(
            "RestApiId" not in event.properties
            for spec in self.functions()
            for event in spec.events_of("Api")
        )
        return [*self.of_type(API_TYPE), *([IMPLICIT_API] if implicit else [])]

    def api_properties(self, logical_id: str) -> dict[str, Any]:
        """An AWS::Serverless::Api's properties with Globals.Api merged in (implicit API: Globals only)."""
        if logical_id == IMPLICIT_API and logical_id not in self.resources:
            return self._with_globals("Api", {}, {})
        return self._with_globals("Api", self.resource(logical_id, API_TYPE), self.properties(logical_id))

    def layer_path(self, logical_id: str) -> Path:
        """Where a layer's code is, as Lambda would put it on sys.path (SAM builds `python/` from it)."""
        content = self.properties(logical_id).get("ContentUri")
        if not isinstance(content, str):
            raise TemplateError(f"{logical_id}: ContentUri must be a local path to run it locally")
        path = self.root / content
        return path / "python" if (path / "python").is_dir() else path

    def _function_spec(self, logical_id: str) -> FunctionSpec:
        resource = self.resources[logical_id]
        properties = self._with_globals("Function", resource, resource.get("Properties") or {})
        events = tuple(
            EventSpec(name, str(event.get("Type")), dict(event.get("Properties") or {}))
            for name, event in (properties.get("Events") or {}).items()
        )
        return FunctionSpec(logical_id, properties, events)

    def _with_globals(
        self, section: str, resource: Mapping[str, Any], properties: Mapping[str, Any]
    ) -> dict[str, Any]:
        globals_ = dict(((self.document.get("Globals") or {}).get(section)) or {})
        ignored = resource.get("IgnoreGlobals")  # SAM's resource attribute: "*" or property names
        if ignored == "*":
            globals_ = {}
        elif isinstance(ignored, list):
            globals_ = {key: value for key, value in globals_.items() if key not in ignored}
        return merge_globals(section, globals_, properties)


def merge_globals(section: str, globals_: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """A resource's properties with its Globals section merged in, by SAM's rules.

    Maps merge key by key (recursively), the resource's value winning; lists are the Globals' items then
    the resource's; anything else, an intrinsic function included, two values of different kinds, and
    Function.Architectures: the resource's value wins.
    """
    merged: dict[str, Any] = _merge(section, copy.deepcopy(dict(globals_)), copy.deepcopy(dict(properties)))
    return merged


def _merge(path: str, global_value: Any, local_value: Any) -> Any:
    kind = _kind(global_value)
    if kind != _kind(local_value) or kind == "value" or tuple(path.split(".", 1)) in _REPLACED:
        return local_value
    if kind == "list":
        return global_value + local_value
    merged = dict(global_value)
    for key, value in local_value.items():
        merged[key] = _merge(f"{path}.{key}", merged[key], value) if key in merged else value
    return merged


def _kind(value: Any) -> str:
    """How SAM's merge treats a value: a map, a list, or a value (intrinsic functions count as values)."""
    if isinstance(value, dict) and not is_intrinsic(value):
        return "map"
    return "list" if isinstance(value, list) else "value"


def is_intrinsic(value: Any) -> bool:
    """`{"Ref": ...}`, `{"Condition": ...}` or `{"Fn::...": ...}`: one key naming a function."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    key = next(iter(value))
    return key in ("Ref", "Condition") or str(key).startswith("Fn::")
