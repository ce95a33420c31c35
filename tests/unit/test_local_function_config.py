"""How the local stack configures a function (local.stack.functions): the Lambda runtime's variables, the
template's environment resolved to local values, LoggingConfig and concurrency, Globals included."""

import textwrap
from pathlib import Path

import pytest

from local.emulators.runtime import FunctionConfig
from local.stack.functions import FunctionContext, function_config
from local.stack.options import StackOptions
from local.template import LocalValues, Resolver, Template, TemplateError

TEMPLATE = textwrap.dedent(
    """\
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      LogLevel: {Type: String, Default: INFO}
    Globals:
      Function:
        Timeout: 7
        MemorySize: 256
        ReservedConcurrentExecutions: 1
        Layers: [!Ref Core]
        LoggingConfig: {LogFormat: JSON, ApplicationLogLevel: !Ref LogLevel}
        Environment:
          Variables:
            TABLE_NAME: !Ref Table
            RETRIES: 3
    Resources:
      Core: {Type: AWS::Serverless::LayerVersion, Properties: {ContentUri: layers/core}}
      Table: {Type: AWS::DynamoDB::Table, Properties: {}}
      HookLogGroup: {Type: AWS::Logs::LogGroup}
      Hook:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: functions/hook
          Handler: app.handler
          Layers: [arn:aws:lambda:eu-west-1:123456789012:layer:elsewhere:1]
          LoggingConfig: {LogGroup: !Ref HookLogGroup}
          Environment:
            Variables:
              SELF_URL: !Sub "https://${Api}.execute-api.${AWS::Region}.amazonaws.com/prod/hook"
              SWITCH: true
    """
)
GATEWAY_URL = "http://127.0.0.1:3999"


def configure(tmp_path: Path, *, parameters: dict[str, str], environment: dict[str, str]) -> FunctionConfig:
    (tmp_path / "layers" / "core" / "python").mkdir(parents=True)
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    template = Template.load(tmp_path / "template.yaml")
    values = LocalValues(
        refs={
            "Table": "local-table",
            "Api": "abcdef1234",
            "Hook": "stack-Hook",
            "HookLogGroup": "/local/hook",
        },
        attributes={"Hook": {"Arn": "arn:aws:lambda:eu-west-1:123456789012:function:stack-Hook"}},
    )
    resolver = Resolver(template, parameters=parameters, pseudo={"AWS::Region": "eu-west-1"}, values=values)
    options = StackOptions(concurrency=4, environment=environment)
    context = FunctionContext(
        template=template,
        options=options,
        resolver=resolver,
        aws_endpoint_url="http://127.0.0.1:5000",
        dynamodb_endpoint_url="http://127.0.0.1:8000",
        localize=lambda value: value.replace(
            "https://abcdef1234.execute-api.eu-west-1.amazonaws.com", GATEWAY_URL
        ),
        with_api_url=lambda value: value.replace("{api_url}", f"{GATEWAY_URL}/prod"),
    )
    return function_config(template.function("Hook"), context)


def test_a_function_runs_with_its_template_settings_globals_merged_in(tmp_path: Path) -> None:
    config = configure(tmp_path, parameters={"LogLevel": "DEBUG"}, environment={"CALLBACK": "{api_url}/cb"})
    environment = config.environment

    # LoggingConfig from Globals, the log group from the function's own LoggingConfig.
    assert (environment["AWS_LAMBDA_LOG_FORMAT"], environment["AWS_LAMBDA_LOG_LEVEL"]) == ("JSON", "DEBUG")
    assert config.log_group == "/local/hook"
    # The template's variables resolved to local values, as strings; the API's AWS URL made local.
    assert environment["TABLE_NAME"] == "local-table"
    assert (environment["RETRIES"], environment["SWITCH"]) == ("3", "true")
    assert environment["SELF_URL"] == f"{GATEWAY_URL}/prod/hook"
    assert environment["CALLBACK"] == f"{GATEWAY_URL}/prod/cb"
    # The code directory, then the template's layers (Globals' first); a layer elsewhere cannot be on it.
    assert environment["PYTHONPATH"] == f"{tmp_path / 'functions/hook'}:{tmp_path / 'layers/core/python'}"
    assert (config.timeout, config.memory_size, config.max_concurrency) == (7.0, 256, 1)
    # Never the developer's AWS.
    assert environment["AWS_CONFIG_FILE"] == environment["AWS_SHARED_CREDENTIALS_FILE"] == "/dev/null"
    assert environment["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert environment["AWS_ENDPOINT_URL_DYNAMODB"] == "http://127.0.0.1:8000"
    # The local gateway is plain http: the stack says so explicitly (the template never does).
    assert environment["ALLOW_HTTP_CALLBACK_BASE_URL"] == "true"


def test_a_function_without_a_local_code_directory_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(
        TEMPLATE.replace("CodeUri: functions/hook", "CodeUri: {Bucket: b}")
    )
    template = Template.load(tmp_path / "template.yaml")
    resolver = Resolver(template, parameters={}, pseudo={}, values=LocalValues())
    context = FunctionContext(template, StackOptions(), resolver, "", "", str, str)
    with pytest.raises(TemplateError, match="Hook: CodeUri must be a local path"):
        function_config(template.function("Hook"), context)
