"""The simulator's own routes under `/_simulator/` (no auth; local only): the in-process test API
over HTTP, for tests and people that drive a simulator running in another process.

    GET    truth | truth/{id} | config
    POST   sessions                 seed one: add_session's fields as JSON (201: its Read Session body)
    DELETE sessions/{id}            forget it: Klarna answers 404 from now on
    POST   sessions/{id}/status     act: {"status": "COMPLETED", "updated_at"?, "callback"?, ...}
    POST   sessions/{id}/expire     expire it now
    POST   chaos                    {"profile": "heavy", "set": {"callback_drop_rate": "0.5"}}
    POST   faults | DELETE faults   script one (fail_next's fields: {"method", "path", "status", ...})
    GET    requests | DELETE requests   the merchant API's request log (?method=GET&path=/hpp/...)
    POST   clock                    {"offset_seconds": 7200}: Klarna's clock runs ahead by that much

Unknown session: 404; a body that does not fit: 400; a session that cannot change now: 409.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from local.common.httpserver import Request, Response
from local.klarna_simulator.chaos import chaos_profile
from local.klarna_simulator.klarna_api import Rejected
from local.klarna_simulator.records import InvalidOperation

if TYPE_CHECKING:
    from local.klarna_simulator.simulator import KlarnaSimulator

type _Handler = Callable[["KlarnaSimulator", Request, list[str]], Response]


def _body(request: Request) -> dict[str, Any]:
    payload = request.json() if request.body else {}
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    return payload


def _truth(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    return Response.json(200, simulator.session_truth(ids[0]) if ids else simulator.truth())


def _config(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    described = {"url": simulator.url, **simulator.config.describe(), "chaos": simulator.chaos.as_dict()}
    return Response.json(200, described)


def _seed(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    return Response.json(201, simulator.add_session(**_body(request)))


def _forget(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    simulator.forget(ids[0])
    return Response(204)


def _act(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    fields = _body(request)
    status = fields.pop("status", None)
    if not isinstance(status, str):
        raise ValueError("status (a string) is required")
    return Response.json(200, simulator.act(ids[0], status, **fields))


def _expire(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    return Response.json(200, simulator.expire(ids[0]))


def _chaos(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    body = _body(request)
    profile = chaos_profile(str(body.get("profile", "none")), dict(body.get("set") or {}))
    simulator.set_chaos(profile)
    return Response.json(200, profile.as_dict())


def _add_fault(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    body = _body(request)
    fault = simulator.fail_next(body.pop("method", None), body.pop("path", None), **body)
    return Response.json(201, {"method": fault.method, "path": fault.path_prefix, "times": fault.times})


def _clear_faults(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    simulator.clear_faults()
    return Response(204)


def _requests(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    query = parse_qs(request.query_string)
    method, path = (query.get(name, [None])[0] for name in ("method", "path"))
    return Response.json(200, {"requests": [r.as_dict() for r in simulator.requests_to(method, path)]})


def _clear_requests(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    simulator.clear_requests()
    return Response(204)


def _clock(simulator: KlarnaSimulator, request: Request, ids: list[str]) -> Response:
    offset = _body(request).get("offset_seconds")
    if not isinstance(offset, int | float):
        raise ValueError("offset_seconds (a number) is required")
    simulator.clock.offset = timedelta(seconds=offset)
    now = simulator.clock.now().isoformat()
    return Response.json(200, {"now": now, "offset_seconds": simulator.clock.offset.total_seconds()})


# (method, path with "*" for a session id, handler); a new route is one more line.
_ROUTES: tuple[tuple[str, tuple[str, ...], _Handler], ...] = (
    ("GET", ("truth",), _truth),
    ("GET", ("truth", "*"), _truth),
    ("GET", ("config",), _config),
    ("POST", ("sessions",), _seed),
    ("DELETE", ("sessions", "*"), _forget),
    ("POST", ("sessions", "*", "status"), _act),
    ("POST", ("sessions", "*", "expire"), _expire),
    ("POST", ("chaos",), _chaos),
    ("POST", ("faults",), _add_fault),
    ("DELETE", ("faults",), _clear_faults),
    ("GET", ("requests",), _requests),
    ("DELETE", ("requests",), _clear_requests),
    ("POST", ("clock",), _clock),
)


def _resolve(method: str, parts: list[str]) -> tuple[_Handler, list[str]] | None:
    for route_method, pattern, handler in _ROUTES:
        if route_method != method or len(pattern) != len(parts):
            continue
        pairs = list(zip(pattern, parts, strict=True))
        if all(want in ("*", got) for want, got in pairs):
            return handler, [got for want, got in pairs if want == "*"]
    return None


def handle(simulator: KlarnaSimulator, request: Request, path: str) -> Response:
    resolved = _resolve(request.method, [unquote(part) for part in path.strip("/").split("/") if part])
    if resolved is None:
        raise Rejected(404, "NOT_FOUND", "No such simulator resource")
    handler, ids = resolved
    try:
        return handler(simulator, request, ids)
    except KeyError as missing:
        raise Rejected(404, "NOT_FOUND", f"No such session: {missing}") from None
    except InvalidOperation as why:
        raise Rejected(409, "INVALID_OPERATION", str(why)) from None
    except (TypeError, ValueError, AttributeError) as why:
        raise Rejected(400, "BAD_VALUE", str(why)) from None
