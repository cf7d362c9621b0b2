"""Running the application: uvicorn on a socket this module binds (so port 0 can pick a free port and the
caller learns it before the first request), in the foreground (``unetkit serve``) or in a background thread
(tests, the load benchmark)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6; port 0 picks a free one).

    Raises:
        OSError: the address cannot be bound (in use, not this machine's).
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


# The model's worker thread takes the GIL back between every operator of a forward pass; with Python's default
# 5 ms switch interval a request thread busy decoding or blending can hold it that long each time (16 clients on
# 2 cores: 1.55 of 2 cores busy and the worker's passes 1.7x slower than alone). 0.5 ms keeps the worker fed.
SWITCH_INTERVAL_S = 0.0005


class Server:
    """uvicorn serving ``app`` on ``host:port``; :attr:`port` is the bound port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info",
                 access_log: bool = True) -> None:  # fmt: skip
        import uvicorn

        self.host = host
        self.socket = bind(host, port)
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on",
                                timeout_graceful_shutdown=10, server_header=False)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        """Serve until SIGINT / SIGTERM (uvicorn's handlers) or :meth:`stop`, as this process's main job (it sets
        the process's GIL switch interval, see :data:`SWITCH_INTERVAL_S`)."""
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self, timeout: float = 30.0) -> Server:
        """Serve from a background thread; returns once uvicorn accepts connections.

        Raises:
            RuntimeError: uvicorn did not start within ``timeout`` seconds.
        """
        self._thread = threading.Thread(target=self.serve_forever, name="unetkit-uvicorn", daemon=True)
        self._thread.start()
        until = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > until:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to finish (in-flight requests complete) and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
