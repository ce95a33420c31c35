"""A small threaded HTTP/1.1 server on 127.0.0.1 for the local stack's parts (gateway, Klarna simulator,
fault proxy): each part supplies one function from `Request` to `Response` and this module does the rest.

Standard library only: keep-alive (so clients' connection pools get used), chunked request bodies,
`Expect: 100-continue`, and a `stop()` that does not wait for idle keep-alive connections or slow handlers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from local.common.lifecycle import Startable

HOST = "127.0.0.1"
_log = logging.getLogger("local.http")


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # the raw request target: path and query string, as sent
    headers: tuple[tuple[str, str], ...]  # in order, repeated names kept
    body: bytes
    client_ip: str

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query_string(self) -> str:
        return urlsplit(self.target).query

    def query_pairs(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query_string, keep_blank_values=True)

    def header(self, name: str) -> str | None:
        """The first value of a header (names are case-insensitive)."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    def json(self) -> Any:
        """The body parsed as JSON; ValueError when it is not JSON."""
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, payload: object, headers: Iterable[tuple[str, str]] = ()) -> Response:
        return cls(status, json.dumps(payload).encode(), [("Content-Type", "application/json"), *headers])

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status, text.encode(), [("Content-Type", content_type)])


# A handler answers a request, or returns None to drop the connection without answering.
type Handler = Callable[[Request], Response | None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The stock server joins every handler thread on close: one slow request would hang stop().
    block_on_close = False
    # socketserver listens with a backlog of 5: a burst of new connections (the simulator's callback
    # workers, the poller's reads) overflowed it, and the kernel's retry of a dropped handshake comes
    # a second later, past a 1 s client timeout (an answered request then looked timed out and was
    # sent again). The kernel caps this at net.core.somaxconn.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, owner: HttpServer, host: str, port: int) -> None:
        self.owner = owner
        super().__init__((host, port), _RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if error is None or isinstance(error, OSError):  # clients hanging up are expected
            return
        if self.owner.on_error is not None:
            self.owner.on_error(error)
        else:
            _log.error("%s: unexpected error: %r", self.owner.name, error)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60  # an idle keep-alive connection does not pin a thread forever
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would stall them

    def log_message(self, format: str, *args: Any) -> None:
        pass  # each part logs what matters to it, readably

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stock error page quotes what it could not parse (an unparseable request line, a header):
        # that may hold a callback's secret. Answer with the status's own words only.
        super().send_error(code)

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._untrack(self.connection)

    def __getattr__(self, name: str) -> Any:
        # Every method, however odd, reaches the part's handler (the stock server answers one it has no
        # do_<METHOD> for with 501): the gateway then answers as API Gateway does, 403 for no route.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        body = self._read_body()  # always drained, so the next keep-alive request parses cleanly
        request = Request(
            method=self.command.upper(),
            target=self.path,
            headers=tuple(self.headers.items()),
            body=body,
            client_ip=self.client_address[0],
        )
        try:
            response = self.server.owner.handler(request)
        except Exception:
            _log.exception(
                "%s: handler failed on %s %s", self.server.owner.name, request.method, request.path
            )
            response = Response.json(500, {"message": "local server error (see the stack's log)"})
        if response is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        self.wfile.flush()


class HttpServer(Startable):
    """Serve `handler` on `host:port` (port 0: any free port) in background threads.

    `on_error` receives unexpected errors of the server itself (e.g. a malformed request it could not
    parse) instead of the log: a test fake collects them so a test can assert there were none.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = HOST,
        port: int = 0,
        name: str = "http",
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.handler = handler
        self.name = name
        self.on_error = on_error
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._server = _Server(self, self._host, self._port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll interval
            name=self.name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        with self._lock:
            connections = list(self._connections.items())
        for connection, _ in connections:
            with contextlib.suppress(OSError):  # wakes handlers blocked on an idle keep-alive socket
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join(timeout=5)
        deadline = time.monotonic() + 2
        for _, handler_thread in connections:
            handler_thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._server = None
        self._thread = None

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections[connection] = threading.current_thread()

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(connection, None)
