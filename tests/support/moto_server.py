"""moto in server mode, in a thread of the test process, on a free port of 127.0.0.1.

Clients reach it over HTTP like any AWS endpoint (``endpoint_url``), which is what code that reads
``AWS_ENDPOINT_URL`` needs. It shares moto's in-process backends: a ``mock_aws()`` block that ends
resets them, so a test relying on this server's state should not also use ``mock_aws``.
"""

from __future__ import annotations

import logging
import urllib.request
from typing import Self

from moto.server import ThreadedMotoServer

from local.common.lifecycle import Startable

HOST = "127.0.0.1"


class MotoServer(Startable):
    def __init__(self, host: str = HOST) -> None:
        self._host = host
        self._server: ThreadedMotoServer | None = None
        self._port: int | None = None

    @property
    def endpoint_url(self) -> str:
        if self._port is None:
            raise RuntimeError("moto server is not running: call start() first.")
        return f"http://{self._host}:{self._port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        # werkzeug logs every request at INFO: noise in benchmark output and in failing tests' reports.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # Port 0: the OS picks a free port when the server binds, so there is no race for it.
        server = ThreadedMotoServer(ip_address=self._host, port=0, verbose=False)
        server.start()
        self._server = server
        self._port = server.get_host_and_port()[1]
        return self

    def reset(self) -> None:
        """Forget every resource moto holds (all services, all accounts)."""
        # The URL is this server's own http:// endpoint, never user input.
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()

    def stop(self) -> None:
        server, self._server = self._server, None
        self._port = None
        if server is not None:
            server.stop()
