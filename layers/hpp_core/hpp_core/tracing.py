"""X-Ray tracing for every function: Powertools Tracer, and what it may record.

Tracer decides whether tracing is on (off outside Lambda, under SAM local and with
POWERTOOLS_TRACE_DISABLED) and patches botocore only: each AWS call becomes a subsegment holding its
operation, table name, region and request id (the X-Ray SDK's parameter allow-list; never an item,
a secret value or an event), and the DynamoDB ones are annotated with the session id of their key. httplib
is not patched: its subsegments would hold Klarna's URLs. Klarna calls get their own subsegment instead
(`klarna_call`), annotated with the session id and the HTTP status.

The handler's subsegment and the Klarna ones are written here rather than with Tracer's capture_*
decorators because those (through the X-Ray SDK's context manager) record an escaping exception's message
and stack, and a message can quote what it refused (a pydantic ValidationError quotes its input: a token,
an e-mail). Here a failure is recorded by its type name only, and no response is ever captured.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import wraps
from typing import Any

from aws_lambda_powertools import Tracer

from hpp_core.models import is_session_id

tracer = Tracer(patch_modules=("botocore",))
SESSION_ID_ANNOTATION = "session_id"
_cold_start = True


def annotate_session(session_id: str | None) -> None:
    """Put the session id on the current subsegment (the handler's), when it is one (never free text)."""
    if not tracer.disabled and session_id and is_session_id(session_id):
        tracer.put_annotation(SESSION_ID_ANNOTATION, session_id)


@contextmanager
def subsegment(name: str, *, session_id: str | None = None) -> Iterator[Any]:
    """A subsegment around a block; a failure inside is marked by its exception's type name only."""
    if tracer.disabled:
        yield None
        return
    recorder: Any = tracer.provider  # the X-Ray SDK recorder (BaseProvider does not declare begin/end)
    segment = recorder.begin_subsegment(name)
    if segment is None:  # no trace to join (context missing): run untraced
        yield None
        return
    try:
        if session_id and is_session_id(session_id):
            segment.put_annotation(SESSION_ID_ANNOTATION, session_id)
        yield segment
    except BaseException as exc:
        segment.add_fault_flag()
        segment.put_annotation("error_type", type(exc).__name__)
        raise
    finally:
        recorder.end_subsegment()


@contextmanager
def klarna_call(operation: str, *, session_id: str | None) -> Iterator[Callable[[int], None]]:
    """A Klarna call's subsegment; the block reports the HTTP status it got through the yielded function."""
    with subsegment(f"Klarna {operation}", session_id=session_id) as segment:

        def status(code: int) -> None:
            if segment is not None:
                segment.put_annotation("http_status", code)

        yield status


def traced_handler[**P, R](handler: Callable[P, R]) -> Callable[P, R]:
    """The handler's subsegment (`## lambda_handler`), annotated ColdStart and Service, as Tracer's own."""

    @wraps(handler)
    def traced(*args: P.args, **kwargs: P.kwargs) -> R:
        global _cold_start  # noqa: PLW0603 - once per execution environment, as Tracer's own flag
        with subsegment(f"## {handler.__name__}") as segment:
            if segment is not None:
                segment.put_annotation("ColdStart", _cold_start)
                segment.put_annotation("Service", tracer.service)
            _cold_start = False
            return handler(*args, **kwargs)

    return traced


def annotate_dynamodb_calls(client: Any) -> None:
    """Annotate each DynamoDB call's subsegment (botocore's, open while the call builds its request) with
    the session id of the key it names."""
    if not tracer.disabled:
        client.meta.events.register("before-parameter-build.dynamodb", _annotate_key)


def _annotate_key(params: Mapping[str, Any], **_: Any) -> None:
    key = params.get("Key") or params.get("Item") or {}
    value = key.get("session_id") if isinstance(key, Mapping) else None
    if isinstance(value, Mapping) and isinstance(value.get("S"), str):
        annotate_session(value["S"])


__all__ = [
    "annotate_dynamodb_calls",
    "annotate_session",
    "klarna_call",
    "subsegment",
    "traced_handler",
    "tracer",
]
