"""template.yaml as CloudFormation deploys it: transformed by SAM's own translator (samtranslator, in the
tools virtualenv `make tools` installs), then resolved for given parameter values, Conditions included.

For template tests that must see what SAM generates (roles, the API stage, tags it propagates) and what
a parameter switches on or off. CloudFormation's resource schemas (cfn-lint's copy, same virtualenv) say
which resource types take tags.
"""

import json
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from local.template import TEMPLATE_PATH, LocalValues, Resolver, Template

TOOLS_PYTHON = Path(__file__).resolve().parents[2] / ".venv-tools" / "bin" / "python"
# Run by the tools virtualenv's Python. Code URIs become S3 URIs, as `sam package` makes them; no AWS
# call is made (no managed policy is named by name).
_TRANSFORM = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

with open(sys.argv[1]) as f:
    document = yaml_parse(f.read())
for resource in document["Resources"].values():
    for key in ("CodeUri", "ContentUri"):
        if key in resource.get("Properties", {}):
            resource["Properties"][key] = "s3://bucket/key"
print(json.dumps(transform(document, {}, NoManagedPolicies())))
"""
_TAGGABLE = """
import glob, json, os, cfnlint
taggable = []
for path in glob.glob(os.path.join(os.path.dirname(cfnlint.__file__), "data/schemas/resources/*.json")):
    with open(path) as f:
        schema = json.load(f)
    if "Tags" in schema.get("properties", {}):
        taggable.append(schema["typeName"])
print(json.dumps(sorted(taggable)))
"""
PSEUDO = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::StackName": "hpp-tracker",
          "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}  # fmt: skip
REQUIRED_PARAMETERS = {
    "KlarnaCredentialsSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hpp-tracker/klarna"
}


def _tools(script: str, *args: str) -> Any:
    assert TOOLS_PYTHON.exists(), f"{TOOLS_PYTHON} is missing: run `make tools`"
    output = subprocess.run(
        [str(TOOLS_PYTHON), "-c", script, *args],
        check=True,
        capture_output=True,
        text=True,
        env={"AWS_DEFAULT_REGION": PSEUDO["AWS::Region"], "PATH": "/usr/bin:/bin"},
    ).stdout
    return json.loads(output)


@cache
def _transformed(path: Path) -> str:
    return json.dumps(_tools(_TRANSFORM, str(path)))


@cache
def taggable_types() -> frozenset[str]:
    """The CloudFormation resource types whose schema has a `Tags` property."""
    return frozenset(_tools(_TAGGABLE))


class _Placeholders(dict[str, str]):
    """Every `!GetAtt X.Attr` of the deployed stack, as the text `X.Attr`."""

    def __init__(self, logical_id: str) -> None:
        super().__init__()
        self._logical_id = logical_id

    def __missing__(self, attribute: str) -> str:
        return f"{self._logical_id}.{attribute}"


class _AnyResource(dict[str, dict[str, str]]):
    def __missing__(self, logical_id: str) -> dict[str, str]:
        return _Placeholders(logical_id)


def deployed_resources(
    parameters: Mapping[str, str] | None = None, path: Path = TEMPLATE_PATH
) -> dict[str, Any]:
    """The resources CloudFormation would create for `parameters` (defaults for the rest): SAM's output,
    with each resource whose Condition is false left out and every intrinsic resolved (`!Ref X` of a
    resource is `X`, `!GetAtt X.Attr` is `X.Attr`)."""
    template = Template(json.loads(_transformed(path)), path)
    values = LocalValues(refs={logical_id: logical_id for logical_id in template.resources})
    values.attributes = _AnyResource()
    resolver = Resolver(
        template, parameters={**REQUIRED_PARAMETERS, **(parameters or {})}, pseudo=PSEUDO, values=values
    )
    return {
        logical_id: resolver.resolve(resource)
        for logical_id, resource in template.resources.items()
        if "Condition" not in resource or resolver.condition(str(resource["Condition"]))
    }
