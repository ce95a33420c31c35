"""Idempotent `POST /sessions`: Powertools idempotency with its DynamoDB persistence layer.

A create that carries an `Idempotency-Key` runs at most once per key and caller within 24 hours; a
retry gets the first answer as it was, and Klarna sees one Create Session. Records live in the
template's IdempotencyTable (partition key `id`, TTL on `expiration`: Powertools' own names), one item
per key: `in progress` while the first request runs, then the answer it gave.

- Keyed by the header and the calling principal (the IAM ARN API Gateway authenticated), hashed with
  SHA-256: two callers' keys never meet.
- The body is hashed too (payload validation): the same key with another body is refused (422), a
  second request while the first runs is refused (409). A request in progress whose Lambda died stops
  blocking the key when that invocation's time is up.
- The function that runs the create decides what is remembered (`sessions.SETTLED_CREATE_FAILURES`):
  whatever it returns is; whatever it raises is forgotten (Powertools deletes the record), so the same
  key may be tried again.

This module imports Powertools' idempotency (and jmespath): the sessions function imports it only for a
create that carries the header, so other requests and cold starts do not pay for it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from hpp_core.errors import IdempotencyKeyReused, RequestInProgress, StorageUnavailable

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
    from mypy_boto3_dynamodb import DynamoDBClient

EXPIRY_SECONDS = 24 * 60 * 60


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as it is remembered: status, JSON body, headers; `replayed` when it came from
    the record of an earlier request rather than from running the create."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False

    def as_record(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "headers": self.headers}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Answer":
        return cls(
            status=int(record["status"]),
            body=record.get("body"),
            headers=dict(record.get("headers") or {}),
            replayed=bool(record.get("replayed")),
        )


def _replayed(response: Any, idempotent_data: "DataRecord") -> Any:
    return {**response, "replayed": True}


def _run(*, request: dict[str, Any], create: Callable[[], Answer]) -> dict[str, Any]:
    # `request` is what Powertools hashes: the key and principal (the record's key) and the body.
    return create().as_record()


class IdempotentCreates:
    def __init__(self, table_name: str, client: "DynamoDBClient") -> None:
        self._config = IdempotencyConfig(
            event_key_jmespath="[principal, key]",
            payload_validation_jmespath="body",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=EXPIRY_SECONDS,
            hash_function="sha256",
            response_hook=_replayed,
        )
        persistence = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client)
        self._once = idempotent_function(
            data_keyword_argument="request", persistence_store=persistence, config=self._config
        )(_run)

    def answer(
        self,
        *,
        key: str,
        principal: str | None,
        body: Any,
        context: LambdaContext,
        create: Callable[[], Answer],
    ) -> Answer:
        """The answer for this key, caller and body: `create()`'s own the first time, the remembered
        one after that."""
        # In progress expires with this invocation: a create whose Lambda died does not block the key.
        self._config.register_lambda_context(context)
        request = {"principal": principal or "", "key": key, "body": body}
        try:
            return Answer.from_record(self._once(request=request, create=create))
        except IdempotencyValidationError:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with another request body: use a new key for a new request"
            ) from None
        except IdempotencyAlreadyInProgressError:
            raise RequestInProgress(
                "a request with this Idempotency-Key is still in progress: retry once it has answered"
            ) from None
        except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError):
            raise StorageUnavailable("idempotency records could not be read or written; retry") from None
