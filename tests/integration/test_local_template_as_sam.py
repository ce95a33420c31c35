"""The template reader merges Globals exactly as SAM does: checked against SAM's own merge (samtranslator's
`Globals`, in the tools virtualenv that `make tools` installs) on generated Globals and resources, and on
the real template."""

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.template import API_TYPE, FUNCTION_TYPE, Template

TOOLS_PYTHON = Path(__file__).resolve().parents[2] / ".venv-tools" / "bin" / "python"
# Run by the tools virtualenv's Python: a case per line in, samtranslator's merge per line out.
SAM_MERGE = """
import json, sys
from samtranslator.plugins.globals.globals import Globals
for line in sys.stdin:
    case = json.loads(line)
    globals_ = Globals({"Globals": {case["section"]: case["globals"]}})
    kind = "AWS::Serverless::" + case["section"]
    print(json.dumps(globals_.merge(kind, case["properties"], "Resource", case["ignore"])), flush=True)
"""
# Properties SAM accepts in Globals (lists, maps and values among them), and keys to nest.
SECTION_KEYS = {
    "Function": ["Architectures", "Layers", "Environment", "LoggingConfig", "Tags", "Timeout", "Tracing",
                 "ReservedConcurrentExecutions", "VpcConfig"],
    "Api": ["Auth", "BinaryMediaTypes", "Variables", "MethodSettings", "Cors"],
}  # fmt: skip
NESTED_KEYS = st.sampled_from(["Variables", "LogGroup", "LogFormat", "A", "B", "C"])

intrinsics = st.one_of(
    st.builds(lambda name: {"Ref": name}, st.sampled_from(["Table", "Stage"])),
    st.builds(lambda name: {"Fn::GetAtt": [name, "Arn"]}, st.sampled_from(["Table", "Queue"])),
    st.builds(lambda text: {"Fn::Sub": text}, st.sampled_from(["${AWS::Region}", "x-${Stage}"])),
    st.just({"Condition": "IsProd"}),
)
values = st.recursive(
    st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", "arm64", "x86_64"]), st.booleans(), intrinsics),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(NESTED_KEYS, inner, max_size=3)),
    max_leaves=8,
)

type SamMerge = Callable[[dict[str, Any]], Any]


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    section = draw(st.sampled_from(sorted(SECTION_KEYS)))
    keys = st.sampled_from(SECTION_KEYS[section])
    globals_ = draw(st.dictionaries(keys, values, max_size=4))
    # Mostly the Globals' own keys: a merge happens only where both have one.
    shared = st.sampled_from(sorted(globals_)) if globals_ else keys
    properties = draw(st.dictionaries(st.one_of(shared, shared, keys), values, max_size=4))
    ignore = draw(st.one_of(st.none(), st.just("*"), st.lists(st.sampled_from(sorted(globals_) or ["x"]))))
    if isinstance(ignore, list):
        ignore = sorted(set(ignore) & set(globals_)) or None  # SAM refuses to ignore what Globals lacks
    return {"section": section, "globals": globals_, "properties": properties, "ignore": ignore}


@pytest.fixture(scope="module")
def sam_merge() -> Iterator[SamMerge]:
    """SAM's own merge of one case, by a samtranslator process that lives as long as the module's tests."""
    assert TOOLS_PYTHON.exists(), f"{TOOLS_PYTHON} is missing: run `make tools`"
    process = subprocess.Popen(
        [str(TOOLS_PYTHON), "-c", SAM_MERGE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    cases_in, answers = process.stdin, process.stdout
    assert cases_in is not None and answers is not None

    def merge(case: dict[str, Any]) -> Any:
        cases_in.write(json.dumps(case) + "\n")
        cases_in.flush()
        line = answers.readline()
        assert line, f"samtranslator exited ({process.poll()})"
        return json.loads(line)

    yield merge
    cases_in.close()
    process.wait(timeout=10)


def merged_by_reader(case: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {"Properties": case["properties"]}
    if case["ignore"] is not None:
        resource["IgnoreGlobals"] = case["ignore"]
    document = {"Globals": {case["section"]: case["globals"]}, "Resources": {"Resource": resource}}
    if case["section"] == "Api":
        resource["Type"] = API_TYPE
        return Template(document).api_properties("Resource")
    resource["Type"] = FUNCTION_TYPE
    return Template(document).function("Resource").properties


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_globals_merge_as_samtranslator_merges_them(sam_merge: SamMerge, case: dict[str, Any]) -> None:
    assert merged_by_reader(case) == sam_merge(case)


def test_the_real_templates_functions_are_what_sam_deploys(sam_merge: SamMerge) -> None:
    template = Template.load()
    functions = template.functions()
    assert functions
    for spec in functions:
        resource = template.resources[spec.logical_id]
        case = {
            "section": "Function",
            "globals": (template.document.get("Globals") or {}).get("Function") or {},
            "properties": resource["Properties"],
            "ignore": resource.get("IgnoreGlobals"),
        }
        assert spec.properties == sam_merge(case), spec.logical_id
