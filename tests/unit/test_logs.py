"""The functions' logger: one JSON line per record, sentences kept as they are, a message that is a JSON
object or array logged as one (as Powertools does), and nothing else decoded."""

import io
import json
import logging
from typing import Any

import pytest

from hpp_core.logs import json_message, service_logger


def logged(message: str, **extra: Any) -> dict[str, Any]:
    logger = service_logger()
    stream = io.StringIO()
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logger.info(message, extra=extra)
    (line,) = stream.getvalue().splitlines()
    return json.loads(line)


def test_a_sentence_is_logged_as_it_is_with_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "hpp-callback")
    record = logged("callback handled", outcome="applied", stored_status="IN_PROGRESS")
    assert (record["message"], record["outcome"], record["stored_status"], record["level"]) == (
        "callback handled",
        "applied",
        "IN_PROGRESS",
        "INFO",
    )
    assert record["service"] == "hpp-callback"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"outcome": "applied"}', {"outcome": "applied"}),
        (" [1, 2] ", [1, 2]),
        ("{not json", "{not json"),
        ("123", "123"),
        ("true", "true"),
        ("", ""),
    ],
)
def test_only_a_json_object_or_array_is_decoded(message: str, expected: Any) -> None:
    assert logged(message)["message"] == expected


def test_anything_else_is_refused_as_powertools_expects() -> None:
    for message in ("callback handled", "123", 42, None):
        with pytest.raises(ValueError, match="not a JSON object or array"):
            json_message(message)
