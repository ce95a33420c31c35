"""openapi.yaml for tests: load it, and check bodies against the schemas it declares."""

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@cache
def load_spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as stream:
        spec = yaml.safe_load(stream)
    assert isinstance(spec, dict)
    return spec


def operations(spec: dict[str, Any] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Every operation by (METHOD, path), path templates as written ({session_id})."""
    spec = spec or load_spec()
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def resolve(node: Any, spec: dict[str, Any] | None = None) -> Any:
    """`node` with every local `$ref` replaced by what it points at (the spec has no cycles)."""
    spec = spec or load_spec()
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target, spec)
        return {key: resolve(value, spec) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, spec) for item in node]
    return node


def schema_errors(schema: dict[str, Any], instance: Any) -> list[str]:
    validator = OAS30Validator(resolve(schema))
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def request_errors(method: str, path: str, body: Any) -> list[str]:
    operation = operations()[(method.upper(), path)]
    schema = resolve(operation["requestBody"])["content"]["application/json"]["schema"]
    return schema_errors(schema, body)


def response_errors(method: str, path: str, status: int, body: Any) -> list[str]:
    """Why `body` is not what openapi.yaml promises for this answer (empty when it is)."""
    responses = operations()[(method.upper(), path)]["responses"]
    if str(status) not in responses:
        return [f"{method} {path} does not document status {status}"]
    response = resolve(responses[str(status)])
    content = response.get("content")
    if content is None:
        return [] if body is None else [f"{status} documents no body, got {body!r}"]
    return schema_errors(content["application/json"]["schema"], body)
