"""The HTTP layer: a standard-library threading server around :class:`~unetkit.serve.app.SegmentationService`.

Routes
    ``GET /``: the web page (pick an image, see the overlay and the class fractions).
    ``GET /health``: ``{"status": "ok"}``.
    ``GET /info``: the model, its classes and the service's limits (JSON).
    ``POST /predict?format=mask|overlay|json``: the request body is the raw bytes of one image file;
    ``mask`` (default) answers the label map in the input's format and geometry, ``overlay`` a PNG,
    ``json`` the class pixel counts with the mask and overlay as base64 PNGs.

Errors are JSON ``{"error": "..."}`` with a 4xx status that names the problem (400 bad request or image,
404, 405, 411 no length, 413 too large, 415 not an image); an unexpected failure is a 500 whose details go
to the server's log, not to the client.
"""

from __future__ import annotations

import json
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from unetkit.serve.app import FORMATS, SegmentationService, ServiceError

QUERY_KEYS = {"/predict": {"format"}}
# An upload over the limit but at most this large is read and dropped before the 413 answer.
DRAIN_BYTES = 1 << 30


def make_server(service: SegmentationService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0 picks a free one: see ``server.server_address``)."""

    class Handler(_Handler):
        pass

    Handler.service = service
    return _Server((host, port), Handler)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up early is routine for a web service, not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def page() -> bytes:
    """The web page's HTML (shipped as package data)."""
    return resources.files("unetkit.serve").joinpath("static/index.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    service: SegmentationService
    _body_read = False
    server_version = "unetkit"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's naming)
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def _route(self, method: str) -> None:
        self._body_read = False  # one handler serves every request of a kept-alive connection
        try:
            path, query = self._parse_target()
            routes = {("GET", "/"): self._page, ("GET", "/health"): self._health, ("GET", "/info"): self._info,
                      ("POST", "/predict"): self._predict}
            handler = routes.get((method, path))
            if handler is None:
                allowed = sorted(m for m, p in routes if p == path)
                if allowed:
                    raise ServiceError(405, f"{method} is not allowed on {path}; use {', '.join(allowed)}")
                raise ServiceError(404, f"no such page: {path} (pages: /, /health, /info, POST /predict)")
            handler(query)
        except ServiceError as err:
            self._drain_body()
            self._send_json({"error": err.message}, status=err.status)
        except Exception:  # noqa: BLE001 - the client gets a generic message, the log gets the traceback
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._send_json({"error": "internal error while handling the request (see the server log)"}, status=500)

    def _parse_target(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        try:
            raw = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError as err:
            raise ServiceError(400, f"malformed query string {parts.query!r}") from err
        unknown = sorted(set(raw) - QUERY_KEYS.get(parts.path, set()))
        if unknown:
            raise ServiceError(400, f"unknown query parameter(s) {', '.join(unknown)} for {parts.path}")
        if any(len(v) > 1 for v in raw.values()):
            raise ServiceError(400, "each query parameter may be given once")
        return parts.path, {k: v[0] for k, v in raw.items()}

    # -- pages ---------------------------------------------------------------------------------
    def _page(self, query: dict[str, str]) -> None:
        self._send(page(), "text/html; charset=utf-8")

    def _health(self, query: dict[str, str]) -> None:
        self._send_json({"status": "ok"})

    def _info(self, query: dict[str, str]) -> None:
        self._send_json(self.service.info())

    def _predict(self, query: dict[str, str]) -> None:
        fmt = query.get("format", "mask")
        if fmt not in FORMATS:
            raise ServiceError(400, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        body = self._read_body()
        reply = self.service.predict(body, fmt=fmt)
        self._send(reply.body, reply.media_type, headers=reply.headers)

    # -- plumbing ------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ServiceError(411, "chunked uploads are not accepted: send a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise ServiceError(411, "a Content-Length header is required")
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError as err:
            self.close_connection = True
            raise ServiceError(400, f"malformed Content-Length {length!r}") from err
        limit = self.service.limits.max_bytes
        if size > limit:
            # Read (and drop) a body up to DRAIN_BYTES, so the client gets the answer instead of a broken pipe.
            if size <= DRAIN_BYTES:
                self._discard(size)
            self.close_connection = True
            raise ServiceError(413, f"upload of {size} bytes exceeds the limit of {limit}")
        body = self.rfile.read(size)
        if len(body) != size:
            self.close_connection = True
            raise ServiceError(400, f"upload ended after {len(body)} of {size} bytes")
        self._body_read = True
        return body

    def _discard(self, size: int) -> None:
        while size > 0:
            chunk = self.rfile.read(min(size, 2**20))
            if not chunk:
                break
            size -= len(chunk)
        self._body_read = True

    def _drain_body(self) -> None:
        """Read a small unread body so the connection can be reused; otherwise close it."""
        if self._body_read or self.close_connection:
            return
        try:
            size = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            return
        if 0 < size <= 2**20:
            self.rfile.read(size)
        elif size:
            self.close_connection = True

    def _send_json(self, payload: dict[str, Any], *, status: int = 200) -> None:
        self._send(json.dumps(payload).encode(), "application/json", status=status)

    def _send(self, body: bytes, media_type: str, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's signature
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")
