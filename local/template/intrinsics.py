"""CloudFormation's intrinsic functions resolved to the local stack's values.

`Resolver` resolves !Ref, !GetAtt, !Sub, !Join, !Select, !Split, !If (with the template's Conditions) and
!FindInMap. Resources the stack does not emulate still resolve (`!Ref` gives a placeholder) so a function
whose environment mentions one can start; the stack logs which ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from local.template.reader import Template, TemplateError, is_intrinsic


class _NoValue:
    """AWS::NoValue: the property it is given to disappears."""


NO_VALUE = _NoValue()


@dataclass
class LocalValues:
    """What each logical id stands for locally: its `!Ref` value and its `!GetAtt` attributes."""

    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    placeholders: set[str] = field(default_factory=set)  # logical ids the stack does not emulate


class Resolver:
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
        self._functions: dict[str, Callable[[Any], Any]] = {
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Equals": self._equals,
            "Fn::And": lambda items: all(self.resolve(item) for item in items),
            "Fn::Or": lambda items: any(self.resolve(item) for item in items),
            "Fn::Not": lambda items: not self.resolve(items[0]),
            "Condition": self.condition,
        }

    def parameter(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        declared = self.template.parameters.get(name)
        if declared is None:
            raise TemplateError(f"!Ref {name}: no such parameter or resource")
        if "Default" not in declared:
            raise TemplateError(f"parameter {name} has no default: give it a value (--param {name}=...)")
        return as_string(declared["Default"])

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in map(self.resolve, value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if is_intrinsic(value):
            ((key, argument),) = value.items()
            return self._ref(argument) if key == "Ref" else self._function(key)(argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.template.document.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"no condition {name!r}")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    # ---------------------------------------------------------------------------------- internal

    def _function(self, key: str) -> Callable[[Any], Any]:
        function = self._functions.get(key)
        if function is None:
            raise TemplateError(f"{key} is not supported by the local stack")
        return function

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

    def _join(self, argument: Any) -> str:
        separator, items = argument
        return str(separator).join(as_string(item) for item in self.resolve(items))

    def _select(self, argument: Any) -> Any:
        index, items = argument
        return self.resolve(items)[int(self.resolve(index))]

    def _split(self, argument: Any) -> list[str]:
        separator, text = argument
        return str(self.resolve(text)).split(str(separator))

    def _if(self, argument: Any) -> Any:
        name, if_true, if_false = argument
        return self.resolve(if_true if self.condition(name) else if_false)

    def _find_in_map(self, argument: Any) -> Any:
        name, top, second = (self.resolve(part) for part in argument[:3])
        return self.template.document["Mappings"][name][top][second]

    def _equals(self, argument: Any) -> bool:
        left, right = (as_string(self.resolve(side)) for side in argument)
        return left == right

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
                return as_string(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return self._get_att(name.split(".", 1))
            return as_string(self._ref(name))

        return self._SUB_VARIABLE.sub(replace, str(text))


def as_string(value: Any) -> str:
    """A value as CloudFormation turns it into a string (booleans lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def environment_strings(variables: Mapping[str, Any]) -> dict[str, str]:
    """Lambda environment values are strings (CloudFormation turns numbers and booleans into them)."""
    return {name: as_string(value) for name, value in variables.items() if value is not NO_VALUE}
