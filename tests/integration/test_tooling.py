"""The test tooling itself: DynamoDB Local's lifecycle, template-derived tables, moto's server."""

import os
import socket
import textwrap
import uuid
from pathlib import Path

import boto3
import pytest

from tests.support.dynamodb_local import DynamoDBLocal, DynamoDBLocalError, find_distribution
from tests.support.moto_server import MotoServer
from tests.support.template import TABLE_TYPE, Template, TemplateError, create_table, table_definition

# A table written the way template.yaml writes one, with every short-form tag the loader must read.
SCRATCH_TEMPLATE = textwrap.dedent(
    """\
    AWSTemplateFormatVersion: "2010-09-09"
    Transform: AWS::Serverless-2016-10-31
    Conditions:
      IsProd: !Equals [!Ref Stage, prod]
    Resources:
      Table:
        Type: AWS::DynamoDB::Table
        DeletionPolicy: Retain
        Properties:
          TableName: !Sub ${AWS::StackName}-sessions
          BillingMode: PAY_PER_REQUEST
          DeletionProtectionEnabled: !If [IsProd, true, false]
          AttributeDefinitions:
            - {AttributeName: session_id, AttributeType: S}
            - {AttributeName: poll_shard, AttributeType: S}
            - {AttributeName: next_poll_at, AttributeType: N}
          KeySchema:
            - {AttributeName: session_id, KeyType: HASH}
          GlobalSecondaryIndexes:
            - IndexName: due
              KeySchema:
                - {AttributeName: poll_shard, KeyType: HASH}
                - {AttributeName: next_poll_at, KeyType: RANGE}
              Projection: {ProjectionType: KEYS_ONLY}
              ContributorInsightsSpecification: {Enabled: true}
          StreamSpecification:
            StreamViewType: NEW_AND_OLD_IMAGES
          PointInTimeRecoverySpecification: {PointInTimeRecoveryEnabled: true}
          TimeToLiveSpecification: {AttributeName: expires_ttl, Enabled: true}
          SSESpecification: {SSEEnabled: true, SSEType: KMS, KMSMasterKeyId: !GetAtt Key.Arn}
          Tags:
            - {Key: app, Value: !Ref AWS::StackName}
      Key:
        Type: AWS::KMS::Key
    """
)


@pytest.fixture
def scratch_template(tmp_path: Path) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(SCRATCH_TEMPLATE)
    return Template.load(path)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------------------- template


def test_short_form_tags_load_as_long_form(scratch_template):
    table = scratch_template.properties("Table")
    assert table["TableName"] == {"Fn::Sub": "${AWS::StackName}-sessions"}
    assert table["DeletionProtectionEnabled"] == {"Fn::If": ["IsProd", True, False]}
    assert table["SSESpecification"]["KMSMasterKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}
    assert table["Tags"][0]["Value"] == {"Ref": "AWS::StackName"}
    assert scratch_template.document["Conditions"]["IsProd"] == {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}


def test_table_definition_keeps_only_what_create_table_accepts(scratch_template):
    definition = table_definition("Table", scratch_template)

    assert definition.ttl_attribute == "expires_ttl"
    assert definition.create_table_kwargs == {
        "AttributeDefinitions": [
            {"AttributeName": "session_id", "AttributeType": "S"},
            {"AttributeName": "poll_shard", "AttributeType": "S"},
            {"AttributeName": "next_poll_at", "AttributeType": "N"},
        ],
        "KeySchema": [{"AttributeName": "session_id", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "due",
                "KeySchema": [
                    {"AttributeName": "poll_shard", "KeyType": "HASH"},
                    {"AttributeName": "next_poll_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    }


def test_table_definition_names_what_is_wrong(scratch_template):
    with pytest.raises(TemplateError, match="no resource 'Missing'"):
        table_definition("Missing", scratch_template)
    with pytest.raises(TemplateError, match="not an AWS::DynamoDB::Table"):
        table_definition("Key", scratch_template)
    scratch_template.properties("Table")["BillingMode"] = {"Ref": "BillingMode"}
    with pytest.raises(TemplateError, match="cannot resolve"):
        table_definition("Table", scratch_template)


# ---------------------------------------------------------------------------------- DynamoDB Local


def test_dynamodb_local_answers_on_loopback(dynamodb_local):
    assert dynamodb_local.endpoint_url.startswith("http://127.0.0.1:")
    assert "TableNames" in dynamodb_local.client().list_tables()


def test_table_from_template_has_stream_ttl_and_takes_conditional_writes(dynamodb_local, scratch_template):
    client = dynamodb_local.client()
    name = unique("tooling")
    create_table(client, "Table", name, template=scratch_template)

    table = client.describe_table(TableName=name)["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["LatestStreamArn"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == ["due"]
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_ttl"}

    item = {"session_id": {"S": "s-1"}, "status": {"S": "WAITING"}}
    only_new = "attribute_not_exists(session_id)"
    client.put_item(TableName=name, Item=item, ConditionExpression=only_new)
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        client.put_item(TableName=name, Item=item, ConditionExpression=only_new)

    # The stream saw the one write that applied.
    streams = dynamodb_local.streams_client()
    shard = streams.describe_stream(StreamArn=table["LatestStreamArn"])["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=table["LatestStreamArn"], ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [record["eventName"] for record in records] == ["INSERT"]


@pytest.mark.parametrize("logical_id", sorted(Template.load().of_type(TABLE_TYPE)))
def test_every_table_of_template_yaml_creates_in_dynamodb_local(dynamodb_local, logical_id):
    client = dynamodb_local.client()
    name = unique(logical_id.lower())
    definition = create_table(client, logical_id, name)
    assert client.describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"
    if definition.ttl_attribute:
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        assert ttl["AttributeName"] == definition.ttl_attribute


def test_stop_leaves_no_java_process_and_frees_the_port():
    server = DynamoDBLocal().start()
    pid, port = server.pid, int(server.endpoint_url.rsplit(":", 1)[1])
    assert pid is not None

    server.stop()

    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    with pytest.raises(DynamoDBLocalError, match="not running"):
        _ = server.endpoint_url


def test_startup_failure_reports_the_jvm_error(tmp_path):
    broken = tmp_path / "dynamodb_local_broken"
    broken.mkdir()
    (broken / "DynamoDBLocal.jar").write_bytes(b"not a jar")
    with pytest.raises(DynamoDBLocalError, match=r"(?s)exited with code \d+.*corrupt jarfile"):
        DynamoDBLocal(distribution=broken, startup_timeout=20).start()


def test_the_npm_package_ships_the_jar():
    assert (find_distribution() / "DynamoDBLocal.jar").is_file()


# ------------------------------------------------------------------------------------ moto server


def test_moto_server_answers_secrets_manager(moto_server: MotoServer):
    client = boto3.client("secretsmanager", endpoint_url=moto_server.endpoint_url)
    name = unique("klarna/credentials")
    client.create_secret(Name=name, SecretString='{"username": "u", "password": "p"}')

    assert client.get_secret_value(SecretId=name)["SecretString"] == '{"username": "u", "password": "p"}'
    assert moto_server.endpoint_url.startswith("http://127.0.0.1:")
