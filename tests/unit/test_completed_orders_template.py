"""examples/completed-orders/template.yaml deploys what the tests run: the same code, the queue and
rule the consumer's promises rest on, and tables shaped as Powertools expects them."""

import inspect
from pathlib import Path

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

import hpp_events
from tests.support.template import Template

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = Template.load(REPO / "examples" / "completed-orders" / "template.yaml")
FUNCTION = EXAMPLE.function("CompletedOrdersFunction")


def test_the_layer_and_the_function_are_the_code_the_tests_import() -> None:
    layer = EXAMPLE.layer_path("EventsLayer")
    assert (layer / "hpp_events" / "__init__.py").resolve() == Path(hpp_events.__file__).resolve()
    code = EXAMPLE.root / FUNCTION.properties["CodeUri"]
    module, function = FUNCTION.handler.split(".")
    assert f"def {function}(" in (code / f"{module}.py").read_text()
    assert FUNCTION.properties["Layers"] == [{"Ref": "EventsLayer"}]


def test_the_function_pins_the_trackers_versions_of_powertools_and_pydantic() -> None:
    def pins(path: Path) -> dict[str, str]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return dict(line.split("==") for line in lines if "==" in line)

    example = pins(EXAMPLE.root / FUNCTION.properties["CodeUri"] / "requirements.txt")
    tracker = pins(REPO / "layers" / "hpp_core" / "requirements.txt")
    assert example == {name: tracker[name] for name in ("aws-lambda-powertools", "pydantic")}


def test_the_rule_sends_the_trackers_completions_to_the_queue_and_failures_to_the_dead_letter_queue() -> None:
    rule = EXAMPLE.properties("CompletedSessionsRule")
    assert rule["EventPattern"] == {
        "source": [{"Ref": "TrackerEventSource"}],
        "detail-type": [hpp_events.COMPLETED],
    }
    assert EXAMPLE.parameters["TrackerEventSource"]["Default"] == hpp_events.DEFAULT_SOURCE
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["CompletedSessionsQueue", "Arn"]}
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["CompletedSessionsDeadLetterQueue", "Arn"]}
    # A token is valid 60 minutes: EventBridge stops retrying a delivery by then.
    assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 3600


def test_the_queue_redrives_to_an_encrypted_dead_letter_queue_and_outlasts_the_function() -> None:
    queue = EXAMPLE.properties("CompletedSessionsQueue")
    dead_letters = EXAMPLE.properties("CompletedSessionsDeadLetterQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["CompletedSessionsDeadLetterQueue", "Arn"]
    }
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 2, "a failed try is retried at least once"
    assert queue["SqsManagedSseEnabled"] is True and dead_letters["SqsManagedSseEnabled"] is True
    # AWS's advice for an SQS event source: a visibility timeout of at least six function timeouts.
    assert queue["VisibilityTimeout"] >= 6 * FUNCTION.timeout
    assert dead_letters["MessageRetentionPeriod"] == 14 * 86_400
    [event] = FUNCTION.events_of("SQS")
    assert event.properties["Queue"] == {"Fn::GetAtt": ["CompletedSessionsQueue", "Arn"]}
    assert event.properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_idempotency_table_is_shaped_as_powertools_writes_it() -> None:
    defaults = inspect.signature(DynamoDBPersistenceLayer).parameters
    table = EXAMPLE.properties("IdempotencyTable")
    assert table["KeySchema"] == [{"AttributeName": defaults["key_attr"].default, "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"] == {
        "AttributeName": defaults["expiry_attr"].default,
        "Enabled": True,
    }


def test_a_completion_is_remembered_longer_than_the_trackers_archive_keeps_it() -> None:
    """A replay of the whole archive then places no order twice."""
    tracker = Template.load()
    archive_days = tracker.parameters["EventArchiveRetentionDays"]["Default"]
    assert EXAMPLE.parameters["IdempotencyDays"]["Default"] > archive_days
    variables = FUNCTION.properties["Environment"]["Variables"]
    assert variables["IDEMPOTENCY_DAYS"] == {"Ref": "IdempotencyDays"}
