"""The local stack is driven by the template, generically: a template with functions it has never seen (an
IAM-authorized API with path parameters, a DynamoDB stream consumer with filter criteria, partial-batch
responses, bisect, a retry limit and an SQS on-failure destination, a ScheduleV2 poller), an event bus with
an archive, a queue and a table with a GSI runs locally without a change to the stack's code."""

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3

from local.emulators.fault_proxy import AwsFaults
from local.klarna_simulator import SimulatorConfig
from local.stack import READY_KEYS, LocalStack, StackOptions

pytestmark = pytest.mark.e2e

HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=15))

TEMPLATE = textwrap.dedent(
    """\
    AWSTemplateFormatVersion: "2010-09-09"
    Transform: AWS::Serverless-2016-10-31
    Parameters:
      Stage: {Type: String, Default: v1}
      KlarnaApiUrl: {Type: String, Default: "https://api.playground.klarna.com"}
      KlarnaCredentialsSecretArn: {Type: String}
      AlarmEmail: {Type: String, Default: ""}
      CallbackBaseUrl: {Type: String, Default: ""}
    Conditions:
      HasAlarmEmail: !Not [!Equals [!Ref AlarmEmail, ""]]
    Globals:
      Function:
        Runtime: python3.13
        Timeout: 5
        Layers: [!Ref Shared]
        Environment:
          Variables:
            TABLE_NAME: !Ref Table
            BUS_NAME: !Ref Bus
            KLARNA_API_URL: !Ref KlarnaApiUrl
            KLARNA_CREDENTIALS_SECRET_ARN: !Ref KlarnaCredentialsSecretArn
    Resources:
      Shared:
        Type: AWS::Serverless::LayerVersion
        Properties: {ContentUri: layer}
      Table:
        Type: AWS::DynamoDB::Table
        Properties:
          BillingMode: PAY_PER_REQUEST
          AttributeDefinitions:
            - {AttributeName: id, AttributeType: S}
            - {AttributeName: poll_shard, AttributeType: S}
            - {AttributeName: poll_due_at, AttributeType: N}
          KeySchema: [{AttributeName: id, KeyType: HASH}]
          GlobalSecondaryIndexes:
            - IndexName: due-index
              KeySchema:
                - {AttributeName: poll_shard, KeyType: HASH}
                - {AttributeName: poll_due_at, KeyType: RANGE}
              Projection: {ProjectionType: KEYS_ONLY}
          StreamSpecification: {StreamViewType: NEW_AND_OLD_IMAGES}
          TimeToLiveSpecification: {AttributeName: expires_ttl, Enabled: true}
      Bus:
        Type: AWS::Events::EventBus
        Properties: {Name: !Sub "${AWS::StackName}-bus"}
      BusArchive:
        Type: AWS::Events::Archive
        Properties: {SourceArn: !GetAtt Bus.Arn, RetentionDays: 7}
      Dlq:
        Type: AWS::SQS::Queue
        Properties: {MessageRetentionPeriod: 1209600}
      AlarmQueue:
        Type: AWS::SQS::Queue
        Condition: HasAlarmEmail
      Api:
        Type: AWS::Serverless::Api
        Properties:
          StageName: !Ref Stage
          Auth: {DefaultAuthorizer: AWS_IAM}
      EchoFunction:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: functions/echo
          Handler: echo.handler
          Environment:
            Variables:
              DLQ_URL: !Ref Dlq
              STREAM_ARN: !GetAtt Table.StreamArn
              ARCHIVE: !Ref BusArchive
              API_URL: !Sub "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}"
              CALLBACK_BASE_URL: !Ref CallbackBaseUrl
          Events:
            GetItem:
              Type: Api
              Properties: {RestApiId: !Ref Api, Path: "/items/{item_id}", Method: get}
            Hook:
              Type: Api
              Properties: {RestApiId: !Ref Api, Path: /hook, Method: post, Auth: {Authorizer: NONE}}
      RecorderFunction:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: functions/recorder
          Handler: recorder.handler
          Events:
            Changes:
              Type: DynamoDB
              Properties:
                Stream: !GetAtt Table.StreamArn
                StartingPosition: TRIM_HORIZON
                BatchSize: 2
                FilterCriteria:
                  Filters:
                    - Pattern: '{"dynamodb": {"NewImage": {"status": {"S": ["COMPLETED"]}}}}'
                FunctionResponseTypes: [ReportBatchItemFailures]
                BisectBatchOnFunctionError: true
                MaximumRetryAttempts: 1
                DestinationConfig:
                  OnFailure: {Type: SQS, Destination: !GetAtt Dlq.Arn}
      TickerFunction:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: functions/ticker
          Handler: ticker.handler
          Events:
            Every:
              Type: ScheduleV2
              Properties: {ScheduleExpression: rate(1 minute)}
    Outputs:
      BusName: {Value: !Ref Bus}
      DlqUrl: {Value: !Ref Dlq}
      ItemsUrl: {Value: !Sub "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${Stage}/items"}
      AlarmQueueUrl: {Condition: HasAlarmEmail, Value: !Ref AlarmQueue}
    """
)

LAYER = """\
import json
import os

import boto3

def publish(detail_type, detail):
    # AWS_ENDPOINT_URL (set by the stack) sends this to moto's EventBridge.
    boto3.client("events").put_events(Entries=[{
        "EventBusName": os.environ["BUS_NAME"], "Source": "plugin-test", "DetailType": detail_type,
        "Detail": json.dumps(detail),
    }])
"""

ECHO = """\
import json
import os

def handler(event, context):
    names = ("TABLE_NAME", "BUS_NAME", "DLQ_URL", "STREAM_ARN", "ARCHIVE", "API_URL", "KLARNA_API_URL",
             "KLARNA_CREDENTIALS_SECRET_ARN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB",
             "AWS_LAMBDA_FUNCTION_NAME", "CALLBACK_BASE_URL", "SELF_URL")
    body = {"event": event, "env": {name: os.environ.get(name) for name in names}}
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
"""

RECORDER = """\
from shared import publish

def handler(event, context):
    if any("poison" in record["dynamodb"]["NewImage"] for record in event["Records"]):
        raise RuntimeError("poison record")
    failures = []
    for record in event["Records"]:
        image = record["dynamodb"]["NewImage"]
        if "flaky" in image and not hasattr(handler, "failed_once"):
            handler.failed_once = True
            failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
            continue
        publish("Recorded", {"id": image["id"]["S"], "status": image["status"]["S"]})
    return {"batchItemFailures": failures}
"""

TICKER = """\
from shared import publish

def handler(event, context):
    publish("Tick", {"source": event["source"], "remaining": context.get_remaining_time_in_millis()})
"""


def write_app(root: Path) -> Path:
    (root / "layer").mkdir(parents=True)
    (root / "layer" / "shared.py").write_text(LAYER)
    for name, code in (("echo", ECHO), ("recorder", RECORDER), ("ticker", TICKER)):
        (root / "functions" / name).mkdir(parents=True)
        (root / "functions" / name / f"{name}.py").write_text(code)
    (root / "template.yaml").write_text(TEMPLATE)
    return root / "template.yaml"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    template = write_app(tmp_path_factory.mktemp("plugin-app"))
    options = StackOptions(
        template=template,
        port=0,
        poll_interval=0.5,
        stack_name="plugin",
        simulator=SimulatorConfig(journeys="manual"),
        pump_poll_interval=0.1,
        pump_retry_delay=0.1,
        # Puts the fault proxies between the functions and the emulators, at a rate that never fails:
        # everything below then also proves the proxies forward faithfully.
        aws_faults=AwsFaults(put_events_failure_rate=1e-12),
        environment={"SELF_URL": "{api_url}/hook"},
    )
    with LocalStack(options) as running:
        yield running


def aws(stack: LocalStack, service: str) -> Any:
    endpoint = (
        stack.ready["dynamodb_endpoint_url"] if service == "dynamodb" else stack.ready["aws_endpoint_url"]
    )
    return boto3.client(service, endpoint_url=endpoint)  # type: ignore[call-overload]


def drain(
    stack: LocalStack, queue_url: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Messages from a queue (bodies parsed) until `until(bodies)` holds or `timeout` passed."""
    sqs, deadline = aws(stack, "sqs"), time.monotonic() + timeout
    bodies: list[dict[str, Any]] = []
    while not until(bodies) and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_every_resource_of_the_template_exists_locally(stack: LocalStack) -> None:
    ready = stack.ready
    assert set(ready) == set(READY_KEYS)
    assert all(ready[key] for key in READY_KEYS)
    # The template's outputs with their local values; one whose Condition is false is left out.
    assert ready["outputs"] == {
        "BusName": "plugin-bus",
        "DlqUrl": next(
            url for url in aws(stack, "sqs").list_queues()["QueueUrls"] if url.endswith("/plugin-Dlq")
        ),
        "ItemsUrl": f"{ready['api_url']}/items",
    }
    assert ready["event_bus_name"] == "plugin-bus"
    table = aws(stack, "dynamodb").describe_table(TableName=ready["table_name"])["Table"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["due-index"]
    assert table["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    events = aws(stack, "events")
    assert events.describe_event_bus(Name="plugin-bus")["Name"] == "plugin-bus"
    assert [a["ArchiveName"] for a in events.list_archives()["Archives"]] == ["plugin-BusArchive"]
    queues = aws(stack, "sqs").list_queues()["QueueUrls"]
    assert any(url.endswith("/plugin-Dlq") for url in queues)
    assert not any(url.endswith("/plugin-AlarmQueue") for url in queues), "its Condition is false"
    assert ready["events_queue_url"] in queues
    assert set(stack.runtimes) == {"EchoFunction", "RecorderFunction", "TickerFunction"}


def test_functions_get_their_template_environment_resolved_to_local_resources(stack: LocalStack) -> None:
    ready = stack.ready
    response = HTTP.request("GET", f"{ready['api_url']}/items/abc?verbose=1")
    assert response.status == 200
    env = response.json()["env"]

    assert ready["api_url"].endswith("/v1")
    assert env["API_URL"] == ready["api_url"], "the API's AWS URL becomes the local gateway's"
    assert env["CALLBACK_BASE_URL"] == ready["api_url"], "the sessions API builds status_update URLs on it"
    assert env["SELF_URL"] == f"{ready['api_url']}/hook"
    assert (env["TABLE_NAME"], env["BUS_NAME"]) == (ready["table_name"], ready["event_bus_name"])
    assert (
        env["STREAM_ARN"]
        == aws(stack, "dynamodb").describe_table(TableName=ready["table_name"])["Table"]["LatestStreamArn"]
    )
    assert env["DLQ_URL"].endswith("/plugin-Dlq") and env["ARCHIVE"] == "plugin-BusArchive"
    assert env["KLARNA_API_URL"] == ready["klarna_url"]
    secret = aws(stack, "secretsmanager").get_secret_value(SecretId=env["KLARNA_CREDENTIALS_SECRET_ARN"])
    assert json.loads(secret["SecretString"]) == {
        "username": SimulatorConfig.username,
        "password": SimulatorConfig.password,
    }
    # The functions talk to AWS through the fault proxies; the ready line names the emulators themselves.
    proxies = {proxy.name: proxy.url for proxy in stack.proxies}
    assert (env["AWS_ENDPOINT_URL"], env["AWS_ENDPOINT_URL_DYNAMODB"]) == (
        proxies["moto"],
        proxies["dynamodb"],
    )
    assert stack.proxies[0].upstream == ready["dynamodb_endpoint_url"]
    assert stack.proxies[1].upstream == ready["aws_endpoint_url"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "plugin-EchoFunction"


def test_the_gateway_serves_the_templates_routes_with_iam_open_locally(stack: LocalStack) -> None:
    event = HTTP.request("GET", f"{stack.ready['api_url']}/items/it%2Fem-1").json()["event"]
    assert event["pathParameters"] == {"item_id": "it/em-1"}
    assert event["requestContext"]["stage"] == "v1"
    assert event["requestContext"]["identity"]["userArn"].endswith(":user/local-developer")

    public = HTTP.request("POST", f"{stack.ready['api_url']}/hook", body=b"hi").json()["event"]
    assert (public["body"], public["requestContext"]["identity"]["userArn"]) == ("hi", None)
    assert HTTP.request("DELETE", f"{stack.ready['api_url']}/hook").status == 403


def test_the_stream_pump_applies_the_filter_retries_partial_failures_and_gives_up_to_the_dlq(
    stack: LocalStack,
) -> None:
    dynamodb, table = aws(stack, "dynamodb"), stack.ready["table_name"]
    for item_id, status, extra in [
        ("waiting", "WAITING", {}),
        ("done", "COMPLETED", {}),
        ("flaky", "COMPLETED", {"flaky": {"BOOL": True}}),
        ("poison", "COMPLETED", {"poison": {"BOOL": True}}),
    ]:
        dynamodb.put_item(TableName=table, Item={"id": {"S": item_id}, "status": {"S": status}, **extra})

    def recorded_ids(bodies: list[dict[str, Any]]) -> list[str]:
        return sorted(e["detail"]["id"] for e in bodies if e["detail-type"] == "Recorded")

    recorded = drain(stack, stack.ready["events_queue_url"], lambda bodies: len(recorded_ids(bodies)) >= 2)
    time.sleep(0.5)  # nothing else may follow
    recorded += drain(stack, stack.ready["events_queue_url"], lambda bodies: False, timeout=1)
    failed = drain(stack, stack.values.refs["Dlq"], lambda bodies: len(bodies) >= 1)

    assert recorded_ids(recorded) == ["done", "flaky"]
    [record] = failed
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["DDBStreamBatchInfo"]["batchSize"] == 1
    assert record["requestContext"]["functionArn"].endswith(":function:plugin-RecorderFunction")
    [pump] = stack.pumps
    assert pump.stats.records_filtered_out >= 1  # WAITING never reached the function
    assert pump.stats.partial_failures >= 1


def test_the_scheduler_runs_the_schedule_with_a_lambda_like_context(stack: LocalStack) -> None:
    def ticks_of(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in bodies if e["detail-type"] == "Tick"]

    ticks = ticks_of(drain(stack, stack.ready["events_queue_url"], lambda bodies: len(ticks_of(bodies)) >= 3))

    assert len(ticks) >= 3
    assert all(tick["detail"]["source"] == "aws.scheduler" for tick in ticks)
    assert all(0 < tick["detail"]["remaining"] <= 5000 for tick in ticks)
