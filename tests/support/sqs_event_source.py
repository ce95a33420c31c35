"""Lambda's SQS event source mapping, on moto's SQS: what invokes an SQS consumer in the tests.

A poll receives up to the mapping's batch size, invokes the handler with the event Lambda builds from
those messages, and then does what Lambda does with ReportBatchItemFailures: deletes every message the
response does not name; a named one (every one, when the handler raised) stays on the queue and is
visible again once its visibility timeout has passed, which a poll lets pass at once. The queue itself
counts receives and, past its RedrivePolicy's maxReceiveCount, moves a message to its dead-letter queue
(moto does, as SQS does).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.support.lambda_runtime import LambdaContext

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

Handler = Callable[[dict[str, Any], Any], Any]


def lambda_record(message: "MessageTypeDef", queue_arn: str, region: str) -> dict[str, Any]:
    """One received message as a record of Lambda's SQS event."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: {"stringValue": value.get("StringValue"), "dataType": value["DataType"]}
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


@dataclass
class Invocation:
    records: list[dict[str, Any]]
    response: Any = None
    raised: BaseException | None = None

    @property
    def failed(self) -> set[str]:
        """The message ids Lambda keeps on the queue after this invocation."""
        if self.raised is not None:
            return {record["messageId"] for record in self.records}
        return {failure["itemIdentifier"] for failure in self.response["batchItemFailures"]}


@dataclass
class SqsEventSource:
    sqs: "SQSClient"
    queue_url: str
    handler: Handler
    batch_size: int
    timeout_seconds: float
    invocations: list[Invocation] = field(default_factory=list)

    @property
    def queue_arn(self) -> str:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        return attributes["Attributes"]["QueueArn"]

    def poll(self) -> Invocation | None:
        """One receive and, if it got messages, one invocation; None when the queue had nothing to give."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not messages:
            return None
        region = self.sqs.meta.region_name
        invocation = Invocation([lambda_record(message, self.queue_arn, region) for message in messages])
        try:
            invocation.response = self.handler(
                {"Records": invocation.records}, LambdaContext(timeout_seconds=self.timeout_seconds)
            )
        except Exception as exc:  # Lambda counts any error as the whole batch failing
            invocation.raised = exc
        for message in messages:
            if message["MessageId"] in invocation.failed:
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        self.invocations.append(invocation)
        return invocation

    def drain(self, max_polls: int = 100) -> list[Invocation]:
        """Poll until the queue gives nothing (every message deleted or moved to the dead-letter queue)."""
        done: list[Invocation] = []
        for _ in range(max_polls):
            invocation = self.poll()
            if invocation is None:
                return done
            done.append(invocation)
        raise AssertionError(f"the queue still gave messages after {max_polls} polls")
