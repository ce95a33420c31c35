"""How the local stack reads template.yaml: SAM's Globals, intrinsic functions, the real functions."""

import textwrap
from pathlib import Path

import pytest

from local.template import LocalValues, Resolver, Template, TemplateError

SCRATCH = textwrap.dedent(
    """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Stage: {Type: String, Default: prod}
      Needed: {Type: String}
      Size: {Type: Number, Default: 5}
    Conditions:
      IsProd: !Equals [!Ref Stage, prod]
      NotProd: !Not [!Condition IsProd]
    Mappings:
      Regions: {eu-west-1: {Short: euw1}}
    Globals:
      Api:
        BinaryMediaTypes: [image~1png]
        Auth: {DefaultAuthorizer: AWS_IAM}
      Function:
        Timeout: 10
        Layers: [!Ref Core]
        Environment:
          Variables: {TABLE: !Ref Table, SHARED: global, SIZE: !Ref Size}
    Resources:
      Core: {Type: AWS::Serverless::LayerVersion, Properties: {ContentUri: layers/core}}
      Table: {Type: AWS::DynamoDB::Table, Properties: {}}
      Api: {Type: AWS::Serverless::Api, Properties: {StageName: v2, Auth: {ApiKeyRequired: false}}}
      First:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: functions/first
          Handler: first.handler
          Timeout: 3
          Layers: [arn:aws:lambda:eu-west-1:123456789012:layer:other:1]
          Environment:
            Variables: {SHARED: mine, ONLY_FIRST: "1"}
          Events:
            Hook: {Type: Api, Properties: {Path: /hook, Method: post}}
      Second:
        Type: AWS::Serverless::Function
        Properties: {CodeUri: functions/second, Handler: second.handler}
    """
)


@pytest.fixture
def template(tmp_path: Path) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(SCRATCH)
    return Template.load(path)


@pytest.fixture
def resolver(template: Template) -> Resolver:
    values = LocalValues(
        refs={"Table": "local-table", "Api": "abcdef1234"},
        attributes={"Table": {"Arn": "arn:aws:dynamodb:eu-west-1:123456789012:table/local-table"}},
    )
    pseudo = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::URLSuffix": "amazonaws.com"}
    return Resolver(template, parameters={"Needed": "given"}, pseudo=pseudo, values=values)


def test_globals_merge_as_sam_merges_them(template: Template) -> None:
    first, second = sorted(template.functions(), key=lambda spec: spec.logical_id)

    # Maps merge with the function winning, lists append after the globals, scalars override.
    assert first.properties["Environment"]["Variables"] == {
        "TABLE": {"Ref": "Table"},
        "SHARED": "mine",
        "SIZE": {"Ref": "Size"},
        "ONLY_FIRST": "1",
    }
    assert first.properties["Layers"] == [
        {"Ref": "Core"},
        "arn:aws:lambda:eu-west-1:123456789012:layer:other:1",
    ]
    assert (first.timeout, second.timeout) == (3.0, 10.0)
    assert second.properties["Environment"]["Variables"]["SHARED"] == "global"
    assert [(event.name, event.type) for event in first.events] == [("Hook", "Api")]
    assert first.events_of("DynamoDB") == []


def test_apis_get_globals_api_merged_and_the_implicit_api_gets_only_the_globals(template: Template) -> None:
    assert template.api_properties("Api") == {
        "StageName": "v2",
        "BinaryMediaTypes": ["image~1png"],
        "Auth": {"DefaultAuthorizer": "AWS_IAM", "ApiKeyRequired": False},
    }
    assert template.api_properties("ServerlessRestApi")["Auth"] == {"DefaultAuthorizer": "AWS_IAM"}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"Ref": "Table"}, "local-table"),
        ({"Ref": "Stage"}, "prod"),
        ({"Ref": "Needed"}, "given"),
        ({"Fn::GetAtt": ["Table", "Arn"]}, "arn:aws:dynamodb:eu-west-1:123456789012:table/local-table"),
        ({"Fn::Sub": "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}"},
         "https://abcdef1234.execute-api.eu-west-1.amazonaws.com/prod"),
        ({"Fn::Sub": "${Table.Arn}/index/*"}, "arn:aws:dynamodb:eu-west-1:123456789012:table/local-table/index/*"),  # noqa: E501
        ({"Fn::Sub": ["${Name}-${!Literal}", {"Name": {"Ref": "Stage"}}]}, "prod-${Literal}"),
        ({"Fn::Join": ["-", ["a", {"Ref": "Stage"}, 3]]}, "a-prod-3"),
        ({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}, "y"),
        ({"Fn::If": ["IsProd", "yes", "no"]}, "yes"),
        ({"Fn::If": ["NotProd", "yes", "no"]}, "no"),
        ({"Fn::FindInMap": ["Regions", {"Ref": "AWS::Region"}, "Short"]}, "euw1"),
        ({"a": {"Ref": "AWS::NoValue"}, "b": 1}, {"b": 1}),
    ],
)  # fmt: skip
def test_intrinsic_functions_resolve_to_local_values(resolver: Resolver, expression, expected) -> None:
    assert resolver.resolve(expression) == expected


def test_what_cannot_be_resolved_is_named(resolver: Resolver, template: Template) -> None:
    no_default = Resolver(template, parameters={}, pseudo={}, values=LocalValues())
    with pytest.raises(TemplateError, match="parameter Needed has no default"):
        no_default.resolve({"Ref": "Needed"})
    with pytest.raises(TemplateError, match="no such parameter or resource"):
        resolver.resolve({"Ref": "Nothing"})
    with pytest.raises(TemplateError, match=r"GetAtt Table\.StreamArn"):
        resolver.resolve({"Fn::GetAtt": ["Table", "StreamArn"]})
    with pytest.raises(TemplateError, match="Fn::ImportValue is not supported"):
        resolver.resolve({"Fn::ImportValue": "shared"})


def test_the_real_template_gives_every_function_its_code_handler_and_layer() -> None:
    template = Template.load()
    functions = {spec.logical_id: spec for spec in template.functions()}

    assert "CallbackFunction" in functions
    for spec in functions.values():
        code = template.root / spec.properties["CodeUri"]
        module, _, _ = spec.handler.rpartition(".")
        assert (code / f"{module}.py").is_file(), spec.logical_id
        assert {"Ref": "CoreLayer"} in spec.properties["Layers"]
        assert "TABLE_NAME" in spec.properties["Environment"]["Variables"]
    assert (template.layer_path("CoreLayer") / "hpp_core" / "__init__.py").is_file()


GLOBAL_SETTINGS = textwrap.dedent(
    """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      LogLevel: {Type: String, Default: INFO}
    Globals:
      Function:
        Architectures: [arm64]
        Tags: [{Key: app, Value: tracker}]
        ReservedConcurrentExecutions: 5
        LoggingConfig:
          LogFormat: JSON
          ApplicationLogLevel: !Ref LogLevel
    Resources:
      FirstLogGroup: {Type: AWS::Logs::LogGroup}
      First:
        Type: AWS::Serverless::Function
        Properties:
          Architectures: [x86_64]
          Tags: [{Key: part, Value: first}]
          LoggingConfig:
            LogGroup: !Ref FirstLogGroup
            ApplicationLogLevel: DEBUG
      Second:
        Type: AWS::Serverless::Function
        IgnoreGlobals: [LoggingConfig]
        Properties:
          LoggingConfig: {LogGroup: second}
      Third:
        Type: AWS::Serverless::Function
        IgnoreGlobals: "*"
        Properties: {}
    """
)


def test_settings_given_once_in_globals_reach_each_function_as_sam_merges_them(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(GLOBAL_SETTINGS)
    first, second, third = (
        Template.load(path).function(name).properties for name in ("First", "Second", "Third")
    )

    # A map merges key by key: the function keeps its own log group and its own level.
    assert first["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "DEBUG",
        "LogGroup": {"Ref": "FirstLogGroup"},
    }
    assert first["Tags"] == [{"Key": "app", "Value": "tracker"}, {"Key": "part", "Value": "first"}]
    assert first["Architectures"] == ["x86_64"]  # SAM replaces this list instead of appending to it
    assert first["ReservedConcurrentExecutions"] == 5  # any key of Globals, not a fixed few
    # IgnoreGlobals leaves out what it names, or everything.
    assert second["LoggingConfig"] == {"LogGroup": "second"}
    assert second["Architectures"] == ["arm64"]
    assert third == {}
