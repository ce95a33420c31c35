"""The simulator without a socket: a urllib3 pool that hands each request to the simulator's handler,
the same function its HTTP server calls, and turns the answer into urllib3's response.

For unit tests, which do no I/O: give `KlarnaSimulator.in_process_pool()` to the code under test in
place of its own pool (e.g. `KlarnaClient(..., pool=simulator.in_process_pool())`) and it talks to the
same Klarna as the integration tests, in memory. A dropped connection is urllib3's ProtocolError; a
scripted delay is waited out (timeouts need the real server).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import urllib3

from local.common.httpserver import Handler, Request


class InProcessPool(urllib3.PoolManager):
    def __init__(self, handler: Handler, base_url: Callable[[], str]) -> None:
        super().__init__(retries=False)
        self._handler = handler
        self._base_url = base_url

    # The same signature as PoolManager.urlopen, which urllib3 itself declares as an override.
    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> urllib3.BaseHTTPResponse:
        parts, served = urlsplit(url), urlsplit(self._base_url())
        if parts.netloc != served.netloc:
            raise urllib3.exceptions.ProtocolError(f"the in-process simulator serves {served.netloc} only")
        body = kw.get("body") or b""
        request = Request(
            method=method.upper(),
            target=f"{parts.path}?{parts.query}" if parts.query else parts.path,
            headers=tuple((str(name), str(value)) for name, value in (kw.get("headers") or {}).items()),
            body=body.encode() if isinstance(body, str) else bytes(body),
            client_ip="in-process",
        )
        response = self._handler(request)
        if response is None:
            raise urllib3.exceptions.ProtocolError(
                "Connection aborted: the simulator hung up without answering"
            )
        return urllib3.HTTPResponse(
            body=response.body,
            headers=urllib3.HTTPHeaderDict(response.headers),
            status=response.status,
            request_method=method,
            request_url=url,
        )
