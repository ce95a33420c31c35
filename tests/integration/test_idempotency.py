"""Idempotent creates (hpp_core.idempotency: Powertools idempotency on the template's IdempotencyTable)
on DynamoDB Local and moto: what two requests with the same key do when they overlap, when the first
one's Lambda died, and when the table cannot be reached. The whole route, through the sessions Lambda,
is in test_sessions_handler.py; through the local stack, in tests/e2e/test_demo.py."""

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

import boto3
import pytest
from botocore.config import Config

from hpp_core.errors import IdempotencyKeyReused, RequestInProgress, StorageUnavailable
from hpp_core.idempotency import Answer, IdempotentCreates
from tests.support.lambda_runtime import LambdaContext
from tests.support.template import create_table

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext as PowertoolsContext
    from mypy_boto3_dynamodb import DynamoDBClient

BODY = {"payment_session_url": "https://api.playground.klarna.com/payments/v1/sessions/kp-1"}
CALLER = "arn:aws:sts::123456789012:assumed-role/merchant-backend/checkout-service"


class LambdaKilled(BaseException):
    """What a Lambda that timed out or crashed looks like from inside: nothing after it runs."""


@pytest.fixture
def creates(dynamodb: "DynamoDBClient") -> Iterator[IdempotentCreates]:
    table = f"idempotency-{uuid.uuid4().hex[:12]}"
    create_table(dynamodb, "IdempotencyTable", table)
    yield IdempotentCreates(table, dynamodb)
    dynamodb.delete_table(TableName=table)


def answer(
    creates: IdempotentCreates, create: Callable[[], Answer], *, body: dict = BODY, seconds: float = 10
) -> Answer:
    context = cast("PowertoolsContext", LambdaContext(timeout_seconds=seconds))  # what Lambda hands over
    return creates.answer(key="k-1", principal=CALLER, body=body, context=context, create=create)


def test_a_duplicate_while_the_first_runs_is_409_and_after_it_the_first_answer(
    creates: IdempotentCreates,
) -> None:
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []
    results: list[Answer] = []

    def slow_create() -> Answer:
        runs.append(1)
        started.set()
        release.wait(10)
        return Answer(201, {"session_id": "s-1"})

    first = threading.Thread(target=lambda: results.append(answer(creates, slow_create)))
    first.start()
    assert started.wait(10)
    with pytest.raises(RequestInProgress) as in_flight:
        answer(creates, lambda: Answer(201, {"session_id": "never"}))
    assert (in_flight.value.status_code, in_flight.value.code) == (409, "request_in_progress")
    # Another body with the same key is refused as such, even while the first runs.
    with pytest.raises(IdempotencyKeyReused):
        answer(creates, lambda: Answer(201, {}), body={**BODY, "profile_id": "p"})
    release.set()
    first.join(10)
    assert results == [Answer(201, {"session_id": "s-1"})]
    replay = answer(creates, lambda: Answer(201, {"session_id": "never"}))
    assert (replay.status, replay.body, replay.replayed) == (201, {"session_id": "s-1"}, True)
    assert runs == [1]


def test_a_first_request_whose_lambda_died_stops_blocking_the_key_when_its_time_is_up(
    creates: IdempotentCreates,
) -> None:
    def killed() -> Answer:
        raise LambdaKilled

    with pytest.raises(LambdaKilled):
        answer(creates, killed, seconds=0.05)  # in progress until the invocation's end
    threading.Event().wait(0.2)
    retried = answer(creates, lambda: Answer(201, {"session_id": "s-2"}))
    assert (retried.status, retried.replayed) == (201, False)


def test_a_create_that_raised_is_forgotten(creates: IdempotentCreates) -> None:
    def failing() -> Answer:
        raise StorageUnavailable("down")

    with pytest.raises(StorageUnavailable):
        answer(creates, failing)
    assert answer(creates, lambda: Answer(201, {"session_id": "s-3"})).replayed is False


def test_an_unreachable_table_is_503_and_the_create_does_not_run() -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:9",  # nothing listens there
        region_name="eu-west-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(connect_timeout=0.5, retries={"total_max_attempts": 1}),
    )
    ran: list[int] = []

    def create() -> Answer:
        ran.append(1)
        return Answer(201, {})

    with pytest.raises(StorageUnavailable, match="idempotency"):
        answer(IdempotentCreates("idempotency", client), create)
    assert ran == []
