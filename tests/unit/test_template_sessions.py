"""What template.yaml gives the sessions function for this release's promises: its idempotency table
(24-hour records, TTL, only the sessions function may use it), an https-only callback base URL, and no
way for a deployment to switch the http exception of the local stack on."""

import re
from typing import Any

import pytest

from hpp_core.idempotency import EXPIRY_SECONDS
from local.stack.options import LOCAL_ENVIRONMENT
from local.template import load_template


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in function["Properties"]["Policies"] for s in policy.get("Statement", [])]


def test_the_idempotency_table_keeps_powertools_records_and_expires_them(template: dict[str, Any]) -> None:
    table = template["Resources"]["IdempotencyTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]  # Powertools' key_attr
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    # Encrypted at rest (with KmsKeyArn when it is set: tests/integration/test_template_protection.py).
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert "StreamSpecification" not in table, "no stream: these records are no session's history"
    assert EXPIRY_SECONDS == 24 * 3600


def test_only_the_sessions_function_reads_and_writes_it(template: dict[str, Any]) -> None:
    users = set()
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for statement in statements(resource):
            if statement["Resource"] == {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}:
                users.add(name)
                assert set(statement["Action"]) == {
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                }
    assert users == {"SessionsFunction"}
    environment = template["Resources"]["SessionsFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["IDEMPOTENCY_TABLE_NAME"] == {"Ref": "IdempotencyTable"}


def test_the_distribution_route_is_iam_authorized_like_the_other_sessions_routes(
    template: dict[str, Any],
) -> None:
    events = template["Resources"]["SessionsFunction"]["Properties"]["Events"]
    (distribution,) = [
        e["Properties"] for e in events.values() if e["Properties"]["Path"].endswith("/distribution")
    ]
    assert (distribution["Method"], distribution["Path"]) == ("POST", "/sessions/{session_id}/distribution")
    assert "Auth" not in distribution, "the Api's DefaultAuthorizer (AWS_IAM) applies"


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("", True),
        ("https://pay.example.com/hpp", True),
        ("http://pay.example.com/hpp", False),
        ("https://pay.example.com/hpp?x=1", False),
        ("ftp://pay.example.com", False),
    ],
)
def test_the_callback_base_url_parameter_takes_https_only(
    template: dict[str, Any], value: str, allowed: bool
) -> None:
    pattern = template["Parameters"]["CallbackBaseUrl"]["AllowedPattern"]
    assert (re.fullmatch(pattern, value) is not None) is allowed


def test_no_deployment_can_inherit_the_local_stacks_http_exception(template: dict[str, Any]) -> None:
    (variable,) = LOCAL_ENVIRONMENT
    assert variable == "ALLOW_HTTP_CALLBACK_BASE_URL"
    text = repr(template)
    assert variable not in text, "only the local stack sets it"
