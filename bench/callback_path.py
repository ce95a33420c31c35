"""The callback's hot path against its own write: `python -m bench.callback_path [--quick]`.

The subject is the callback function's handler (imported as Lambda imports it) answering status
callbacks for tracked sessions, each one applied: routing, parsing, the secret's hash, the one
conditional UpdateItem, the metric and the log line. The baseline is a raw loop of the same UpdateItem
(the very request the handler sends, captured from it, with the next session's key and timestamps) on
the same client. Both on DynamoDB Local, in rounds that alternate the two; the ratio is the median of the
rounds' ratios (handler time / raw time). Logs and metrics are written, to /dev/null.

    PYTHONPATH=layers/hpp_core:functions/callback:. .venv/bin/python -m bench.callback_path
"""

import argparse
import contextlib
import copy
import importlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.repository import SessionRepository
from hpp_core.settings import clear_settings_cache
from hpp_core.timestamps import format_timestamp, to_epoch_millis
from tests.support.dynamodb_local import DynamoDBLocal
from tests.support.lambda_runtime import LambdaContext, load_event
from tests.support.template import create_table

SECRET = "bench-secret-not-real-0123456789abcdef"  # noqa: S105 - a test value


@contextlib.contextmanager
def environment(server: DynamoDBLocal) -> Iterator[dict[str, str]]:
    names = {
        "TABLE_NAME": f"sessions-{uuid.uuid4().hex[:8]}",
        "STATE_TABLE_NAME": f"state-{uuid.uuid4().hex[:8]}",
    }
    variables = {
        **names,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_ENDPOINT_URL_DYNAMODB": server.endpoint_url,
        "KLARNA_API_URL": "http://127.0.0.1:9",
        "KLARNA_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:klarna",
        "POWERTOOLS_SERVICE_NAME": "hpp-callback",
        "POWERTOOLS_METRICS_NAMESPACE": "HppTracker",
        "SESSION_RETENTION_DAYS": "0",  # DynamoDB Local deletes rows past their TTL
    }
    os.environ.update(variables)
    client = boto3.client("dynamodb", endpoint_url=server.endpoint_url)
    create_table(client, "SessionsTable", names["TABLE_NAME"])
    create_table(client, "StateTable", names["STATE_TABLE_NAME"])
    yield names


def callback_events(session_ids: list[str], start: datetime) -> list[dict[str, Any]]:
    sample = load_event("callback/in_progress")
    events = []
    for number, sid in enumerate(session_ids):
        event = copy.deepcopy(sample)
        event["queryStringParameters"] = {"session_id": sid, "secret": SECRET}
        body = json.loads(sample["body"])
        body["session"].update(
            session_id=sid, updated_at=format_timestamp(start + timedelta(milliseconds=number))
        )
        event["body"] = json.dumps(body)
        events.append(event)
    return events


def raw_requests(template: dict[str, Any], session_ids: list[str], start: datetime) -> list[dict[str, Any]]:
    """The handler's own UpdateItem, once per session: its key and its timestamps changed, nothing else."""
    requests = []
    for number, sid in enumerate(session_ids):
        request = copy.deepcopy(template)
        at = start + timedelta(milliseconds=number)
        request["Key"] = {"session_id": {"S": sid}}
        values = request["ExpressionAttributeValues"]
        values[":updated_at"] = {"S": format_timestamp(at)}
        values[":updated_at_ms"] = {"N": str(to_epoch_millis(at))}
        requests.append(request)
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds of 100 calls")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    rounds, calls = (5, 100) if args.quick else (args.rounds, args.calls)
    with DynamoDBLocal() as server, environment(server) as names, open(os.devnull, "w") as sink:
        clear_settings_cache()
        callback = importlib.import_module("callback")
        callback.logger.registered_handler.setStream(sink)
        client = callback.repository.client
        repository = SessionRepository(names["TABLE_NAME"], client, retention_days=0)
        captured: list[dict[str, Any]] = []
        client.meta.events.register(
            "provide-client-params.dynamodb.UpdateItem",
            lambda params, **_: captured.append(copy.deepcopy(params)),
        )
        sessions = [str(uuid.uuid4()) for _ in range(2 * rounds * calls + 1)]
        for sid in sessions:
            repository.create_session(
                sid, expires_at=None, session_url=None, callback_secret_hash=hash_callback_secret(SECRET)
            )
        start = datetime.now(UTC)
        warmup, *rest = sessions
        with contextlib.redirect_stdout(sink):
            answer = callback.lambda_handler(callback_events([warmup], start)[0], LambdaContext())
        assert answer["statusCode"] == 200 and json.loads(answer["body"])["outcome"] == "applied", answer
        template = captured[0]
        client.meta.events.unregister("provide-client-params.dynamodb.UpdateItem")
        ratios, per_call = [], []
        for number in range(rounds):
            mine = rest[number * 2 * calls : number * 2 * calls + 2 * calls]
            events, requests = (
                callback_events(mine[:calls], start),
                raw_requests(template, mine[calls:], start),
            )
            # Lambda's runtime makes the context before the handler runs: not the handler's time.
            contexts = [LambdaContext() for _ in range(calls)]
            handler_s, raw_s = 0.0, 0.0
            # Metrics print their line to stdout: sent to /dev/null around both sides alike.
            with contextlib.redirect_stdout(sink):
                for index in range(calls):  # one of each in turn, the order alternating
                    first_handler = index % 2 == 0
                    for which in ("handler", "raw") if first_handler else ("raw", "handler"):
                        began = time.perf_counter()
                        if which == "handler":
                            answer = callback.lambda_handler(events[index], contexts[index])
                            handler_s += time.perf_counter() - began
                            assert answer["statusCode"] == 200, answer
                        else:
                            client.update_item(**requests[index])
                            raw_s += time.perf_counter() - began
            ratios.append(handler_s / raw_s)
            per_call.append((handler_s / calls * 1000, raw_s / calls * 1000))
        print(
            f"callback handler / raw conditional UpdateItem, DynamoDB Local, {rounds} rounds of {calls} each"
        )
        print("  round ratios: " + " ".join(f"{ratio:.2f}" for ratio in ratios))
        handler_ms = statistics.median(h for h, _ in per_call)
        raw_ms = statistics.median(r for _, r in per_call)
        median = statistics.median(ratios)
        print(f"  median ratio {median:.3f}x (handler {handler_ms:.2f} ms, raw {raw_ms:.2f} ms a call)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
