"""template.yaml publishes schemas/*.json to an EventBridge schema registry: one OpenAPI 3 schema per
detail type, generated (schemas/registry.py) and kept equal to the source; each is a valid OpenAPI 3.0
document of the whole event, as the registry's code bindings need it."""

import json
import re
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from hpp_core.publishing import COMPLETED, STATUS_CHANGED
from schemas import registry
from tests.support.template import Template

SCHEMA_TYPE = "AWS::EventSchemas::Schema"


def template_schemas(template: Template, source: str) -> dict[str, dict[str, Any]]:
    """Each registry schema's content as CloudFormation would create it, by its detail type."""
    documents = {}
    for resource in template.of_type(SCHEMA_TYPE).values():
        props = resource["Properties"]
        assert props["Type"] == "OpenApi3"
        assert props["RegistryName"] == {"Fn::GetAtt": [registry.REGISTRY_RESOURCE, "RegistryName"]}
        content = props["Content"]["Fn::Sub"]
        variables = set(re.findall(r"\$\{([^}]*)\}", content))
        assert variables == {"EventSource"}, "the source is the only variable"
        document = json.loads(content.replace("${EventSource}", source))
        event = document["components"]["schemas"]["AWSEvent"]
        detail_type = event["x-amazon-events-detail-type"]
        assert props["SchemaName"] == f"hpp-tracker@{registry.component_name(detail_type)}"
        documents[detail_type] = document
    return documents


def test_the_template_holds_exactly_what_the_json_schemas_give() -> None:
    text = registry.TEMPLATE_PATH.read_text()
    assert registry.replace_section(text, registry.template_section()) == text, (
        "template.yaml's registry schemas differ from schemas/*.json: run `make schemas`"
    )
    documents = template_schemas(Template.load(), source="com.example.payments")
    assert list(documents) == [STATUS_CHANGED, COMPLETED]
    for detail_type, document in documents.items():
        assert document == registry.registry_document(detail_type, "com.example.payments")


def test_the_registry_is_named_in_the_outputs() -> None:
    template = Template.load()
    assert template.of_type("AWS::EventSchemas::Registry").keys() == {registry.REGISTRY_RESOURCE}
    output = template.document["Outputs"]["SchemaRegistryName"]
    assert output["Value"] == {"Fn::GetAtt": [registry.REGISTRY_RESOURCE, "RegistryName"]}


@pytest.mark.parametrize("detail_type", [STATUS_CHANGED, COMPLETED])
def test_each_document_is_openapi_3_of_the_whole_event_with_the_detail_as_its_own_component(
    detail_type: str,
) -> None:
    document = registry.registry_document(detail_type, "hpp-tracker")
    validate(document)  # OpenAPI 3.0.x, with every $ref resolving
    schemas = document["components"]["schemas"]
    envelope = schemas["AWSEvent"]
    assert envelope["x-amazon-events-source"] == "hpp-tracker"
    assert envelope["x-amazon-events-detail-type"] == detail_type
    assert set(envelope["required"]) == {
        "version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"
    }  # fmt: skip
    detail = registry.component_name(detail_type)
    assert envelope["properties"]["detail"] == {"$ref": f"#/components/schemas/{detail}"}
    assert set(schemas[detail]["properties"]) == set(registry.source_schema(detail_type)["properties"])


def test_a_document_that_breaks_openapi_is_caught() -> None:
    document = registry.registry_document(COMPLETED, "hpp-tracker")
    document["components"]["schemas"]["HPPSessionCompleted"]["properties"]["status"]["type"] = ["string"]
    with pytest.raises(OpenAPIValidationError):
        validate(document)  # 3.0 has one type per schema: what the conversion of type lists is for


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties"),
        ({"type": ["string", "integer"]}, "one type per schema"),
        ({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}, "one other alternative"),
        ({"$ref": "https://example.com/other.json"}, "own \\$defs"),
        ({"const": None}, "const of type NoneType"),
    ],
)
def test_a_keyword_without_a_conversion_is_refused_not_dropped(schema: dict[str, Any], problem: str) -> None:
    with pytest.raises(registry.UnsupportedSchema, match=problem):
        registry.openapi_schema(schema, schema)


def test_the_conversion_keeps_the_meaning_of_each_keyword() -> None:
    root = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "a": {"const": "1"},
            "b": {"type": ["string", "null"], "examples": ["x", "y"]},
            "c": {"description": "when", "anyOf": [{"$ref": "#/$defs/t"}, {"type": "null"}]},
        },
        "$defs": {"t": {"type": "string", "format": "date-time"}},
    }
    assert registry.openapi_schema(root, root) == {
        "type": "object",
        "properties": {
            "a": {"type": "string", "enum": ["1"]},
            "b": {"type": "string", "nullable": True, "example": "x"},
            "c": {"description": "when", "type": "string", "format": "date-time", "nullable": True},
        },
    }


def test_check_mode_says_when_the_template_is_stale(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    current = registry.TEMPLATE_PATH.read_text()
    stale = tmp_path / "template.yaml"
    stale.write_text(current.replace('"minLength": 1', '"minLength": 2', 1))
    monkeypatch.setattr(registry, "TEMPLATE_PATH", stale)
    assert registry.main(["--check"]) == 1
    assert "run `make schemas`" in capsys.readouterr().out
    assert registry.main([]) == 0  # rewrites it
    assert registry.main(["--check"]) == 0
    assert stale.read_text() == current
