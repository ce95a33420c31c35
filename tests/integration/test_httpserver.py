"""local/common/httpserver.py over real sockets: what its users lean on (dropped connections, error hook)."""

import socket
import threading

import pytest
import urllib3

from local.common.httpserver import HttpServer, Request, Response, _Server

HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10))


def _raw_exchange(port: int, payload: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
        return received


def test_handler_returning_none_drops_the_connection_without_an_answer():
    with HttpServer(lambda request: None if request.path == "/drop" else Response.text(200, "ok")) as server:
        assert _raw_exchange(server.port, b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n") == b""
        with pytest.raises(urllib3.exceptions.ProtocolError):
            HTTP.request("GET", f"{server.url}/drop")
        assert HTTP.request("GET", f"{server.url}/fine").data == b"ok"  # the server itself is fine


def test_on_error_receives_what_the_server_could_not_handle_and_the_handler_never_runs():
    errors: list[BaseException] = []
    seen: list[Request] = []
    received = threading.Event()

    def collect(error: BaseException) -> None:
        errors.append(error)
        received.set()

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response.text(200, "ok")

    with HttpServer(handler, on_error=collect) as server:
        malformed = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n"
        assert _raw_exchange(server.port, malformed) == b""
        assert received.wait(5)
        assert HTTP.request("GET", f"{server.url}/after").data == b"ok"

    assert len(errors) == 1
    assert isinstance(errors[0], ValueError)
    assert [request.path for request in seen] == ["/after"]


def test_without_on_error_the_error_is_logged(caplog: pytest.LogCaptureFixture):
    with HttpServer(lambda request: Response.text(200, "ok"), name="logged") as server:
        malformed = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n"
        _raw_exchange(server.port, malformed)
    assert any("logged: unexpected error: ValueError" in record.getMessage() for record in caplog.records)


def test_a_burst_of_connections_waits_to_be_accepted_instead_of_being_dropped():
    """32 clients connect while the server accepts nothing (its accept loop busy): every handshake
    completes and waits in the listen queue. With socketserver's backlog of 5 only 6 did; the others'
    SYNs were dropped and retried by the kernel a second later, past a 1 s callback timeout."""
    server = _Server(HttpServer(lambda request: Response(200)), "127.0.0.1", 0)  # listening, not serving
    clients = [socket.socket() for _ in range(32)]
    try:
        for client in clients:
            client.setblocking(False)
            client.connect_ex(server.server_address)  # on loopback the handshake is done on return
        server.socket.setblocking(False)
        accepted = 0
        while True:
            try:
                connection, _ = server.socket.accept()
            except BlockingIOError:
                break
            connection.close()
            accepted += 1
        assert accepted == len(clients)
    finally:
        for client in clients:
            client.close()
        server.server_close()


SECRET = "cb-secret-6f1d2a9e"


@pytest.mark.parametrize(
    "request_line",
    [
        # An unencoded space: the stock page quoted the whole line ("Bad request syntax (...)").
        f"POST /prod/callbacks/hpp?session_id=s 1&secret={SECRET} HTTP/1.1",
        # The stock page quoted the "version" ("Bad request version (...)").
        f"POST /prod/callbacks/hpp HTTP/1.1?secret={SECRET}",
        f"GET /?secret={SECRET}" + "x" * 70_000 + " HTTP/1.1",  # too long
    ],
)
def test_an_unparseable_request_gets_an_error_page_that_echoes_none_of_it(request_line: str):
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response.text(200, "ok")

    with HttpServer(handler) as server:
        answer = _raw_exchange(server.port, request_line.encode() + b"\r\nHost: x\r\n\r\n")
    # What cannot be parsed is answered as HTTP/0.9 would be: the error page alone, no status line.
    assert any(f"Error code: {code}".encode() in answer for code in (400, 414, 505)), answer
    assert SECRET.encode() not in answer
    assert b"secret" not in answer
    assert seen == [], "the handler never saw it"


def test_a_malformed_header_gets_an_error_page_that_echoes_none_of_it():
    with HttpServer(lambda request: Response.text(200, "ok")) as server:
        header = f"X-Secret: {SECRET}" + "y" * 70_000
        answer = _raw_exchange(server.port, f"GET / HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert SECRET.encode() not in answer


@pytest.mark.parametrize("method", ["GET", "TRACE", "BREW", "M-SEARCH", "G\x00ET"])
def test_every_method_reaches_the_handler_none_is_a_501(method: str):
    seen: list[str] = []

    def handler(request: Request) -> Response:
        seen.append(request.method)
        return Response.text(404, "no route")

    with HttpServer(handler) as server:
        answer = _raw_exchange(
            server.port, f"{method} /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
    assert answer.startswith(b"HTTP/1.1 404 ")
    assert seen == [method]
