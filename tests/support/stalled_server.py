"""A dependency that has stalled: a TCP server on 127.0.0.1 that accepts every connection and never
answers (the request is read and ignored), as a hung endpoint behaves. Its URL goes where an endpoint
setting (AWS_ENDPOINT_URL_DYNAMODB, ...) points."""

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stalled_server() -> Iterator[str]:
    """The URL of a server that accepts and never answers, for the block; every socket closed after."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)  # held open, never read from or written to

    thread = threading.Thread(target=accept, name="stalled-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for connection in accepted:
            with contextlib.suppress(OSError):
                connection.close()
