"""The HTTP API: :func:`create_app` builds a FastAPI application around a
:class:`~unetkit.serve.service.SegmentationService` (uvicorn runs it: :mod:`unetkit.serve.server`).

Routes
    ``GET /``: the web page (drop an image, see the overlay, the class areas and the uncertainty).
    ``GET /health``: liveness, ``{"status": "ok"}`` as soon as the process answers (never needs a key).
    ``GET /ready``: readiness, 200 once the model is loaded and a warm-up prediction ran, 503 before (no key).
    ``GET /info``: the model, its classes and the service's limits.
    ``POST /predict?format=mask|overlay|json``: one image file, as the raw request body or as the ``file``
    field of a ``multipart/form-data`` form. ``mask`` (default) answers the label map in the input's format and
    geometry, ``overlay`` a PNG, ``json`` the class areas with the mask, image, overlay (and, with TTA, an
    uncertainty map) as base64 PNGs.
    ``GET /openapi.json`` and ``GET /docs``: the API's schema and its interactive page (the page loads
    Swagger UI's script from a CDN; the schema itself needs nothing from outside).

Refusals are JSON ``{"error": "..."}`` with a status naming the problem: 400 bad request or image,
401 no or wrong API key, 404, 405, 408 upload stalled, 411 no length, 413 too large (bytes or pixels),
415 not an image, 503 queue full or shutting down (with ``Retry-After``), 504 not done in time. Chunked
uploads are accepted and counted against the byte limit while they stream. An unexpected failure is a 500
whose details go to the server's log, not to the client. Requests uvicorn cannot parse (e.g. a malformed
``Content-Length``) are refused by uvicorn itself with a plain-text 400.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from unetkit.serve.service import FORMATS, SegmentationService, ServiceError

# An upload over the byte limit but at most this large is read and dropped before the 413 answer, so the
# client reads the answer instead of a reset connection.
DRAIN_BYTES = 1 << 30
# A refused request's unread body up to this size is read before answering (larger: the connection closes).
SMALL_DRAIN_BYTES = 1 << 20
# Room for a multipart form's boundaries and part headers on top of the file's byte limit.
MULTIPART_SLACK = 64 * 1024
# Longest a refused request's body is read for (a client sending slowly gets a closed connection instead).
DRAIN_SECONDS = 10.0
PAGES = "/, /health, /ready, /info, /docs, /openapi.json, POST /predict"
log = logging.getLogger("unetkit.serve")


# -- schema ------------------------------------------------------------------------------------------
class ErrorReply(BaseModel):
    error: str


class Status(BaseModel):
    status: str


class ClassInfo(BaseModel):
    index: int
    name: str
    colour: list[int] | None


class ClassArea(ClassInfo):
    pixels: int
    fraction: float


class BatchingInfo(BaseModel):
    enabled: bool
    max_batch: int
    max_wait_ms: float


class Info(BaseModel):
    run: str
    model: str
    encoder: str
    task: str
    in_channels: int
    spatial_dims: int
    classes: list[ClassInfo]
    tta: str
    tile_size: list[int]
    max_bytes: int
    max_pixels: int
    max_queue: int
    timeout_s: float
    batching: BatchingInfo
    ready: bool


class UncertaintyInfo(BaseModel):
    measure: str
    mean: float
    max: float
    scale_max: float


class PredictionReply(BaseModel):
    """``format=json``: areas per class; 2D images also get base64 PNGs (``uncertainty_*`` with TTA only)."""

    shape: list[int]
    seconds: float
    tta: str
    classes: list[ClassArea]
    mask_png: str | None = None
    image_png: str | None = None
    overlay_png: str | None = None
    uncertainty_png: str | None = None
    uncertainty: UncertaintyInfo | None = None


_ERROR = {"model": ErrorReply}
FORMAT_QUERY = Query(description="mask, overlay or json", json_schema_extra={"enum": list(FORMATS)})
_BINARY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {
    "required": True,
    "description": "One PNG, JPEG, TIFF / GeoTIFF or .nii.gz file: its raw bytes, or a form with a `file` field. "
                   "The type is read from the bytes, never from a file name.",
    "content": {
        "application/octet-stream": _BINARY,
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
    },
}
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": PredictionReply, "description": "the mask (format=mask: PNG, TIFF or NIfTI like the input), "
          "the overlay PNG (format=overlay) or the JSON summary (format=json)",
          "content": {"image/png": _BINARY, "image/tiff": _BINARY, "application/gzip": _BINARY}},
    400: _ERROR, 401: _ERROR, 408: _ERROR, 411: _ERROR, 413: _ERROR, 415: _ERROR, 503: _ERROR, 504: _ERROR,
}


# -- the application ---------------------------------------------------------------------------------
def create_app(service: SegmentationService, *, api_key: str | None = None) -> FastAPI:
    """The FastAPI application serving ``service``; with ``api_key`` every route but ``/``, ``/health``,
    ``/ready`` and the docs needs it (``X-API-Key: KEY`` or ``Authorization: Bearer KEY``).

    Its lifespan starts the service's model worker and warm-up and stops the worker at shutdown; used without
    a lifespan (an in-process test client) the worker starts with the first prediction.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()

    from unetkit._version import __version__

    app = FastAPI(title="unetkit", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="Segment one image per request with a trained unetkit run.")  # fmt: skip
    _add_error_handlers(app)
    auth = [Security(_key_check(api_key))] if api_key else []

    @app.get("/", response_class=HTMLResponse, summary="The web page")
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("unetkit.serve").joinpath("static/index.html").read_bytes())

    @app.get("/health", response_model=Status, summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", response_model=Status, summary="Readiness: model loaded and warmed up",
             responses={503: _ERROR})  # fmt: skip
    async def ready() -> Any:
        if service.ready:
            return {"status": "ready"}
        message = service.warm_up_error or "the model is warming up"
        return JSONResponse({"error": message}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/info", response_model=Info, dependencies=auth, responses={401: _ERROR},
             summary="The model, its classes and the limits")  # fmt: skip
    async def info() -> dict[str, Any]:
        return service.info()

    @app.post("/predict", dependencies=auth, responses=PREDICT_RESPONSES, openapi_extra={"requestBody": PREDICT_BODY},
              response_class=Response, summary="Segment one image")  # fmt: skip
    async def predict(request: Request, format: Annotated[str, FORMAT_QUERY] = "mask") -> Response:
        try:
            fmt = _check_query(request, format)
            body = await _upload(request, service.limits.max_bytes, timeout=service.limits.timeout_s)
            # Every admitted prediction gets a thread at once (the event loop's pool has 40 by default).
            threads = anyio.to_thread.current_default_thread_limiter()
            threads.total_tokens = max(threads.total_tokens, service.limits.max_queue + 8)
            with service.admission():
                reply = await anyio.to_thread.run_sync(functools.partial(service.predict, body, fmt=fmt))
        except ServiceError:
            await _drain(request, SMALL_DRAIN_BYTES)
            raise
        return Response(reply.body, media_type=reply.media_type, headers=reply.headers)

    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema without the 422 answers it lists by default: invalid requests get 400 here."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


# Module level, so that FastAPI resolves the annotations below (from __future__ import annotations).
_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey")
_BEARER = HTTPBearer(auto_error=False, scheme_name="bearer")


def _key_check(api_key: str):  # type: ignore[no-untyped-def]
    """A dependency that refuses (401) a request without ``api_key`` in ``X-API-Key`` or ``Authorization: Bearer``."""
    expected = api_key.encode()

    async def check(request: Request, key: Annotated[str | None, Security(_KEY_HEADER)],
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]) -> None:
        given = key if key is not None else (credentials.credentials if credentials is not None else None)
        if given is not None and hmac.compare_digest(given.encode(), expected):
            return
        await _drain(request, SMALL_DRAIN_BYTES)
        why = "missing" if given is None else "wrong"
        raise ServiceError(401, f"{why} API key: send it as the X-API-Key header or as Authorization: Bearer KEY",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    return check


def _add_error_handlers(app: FastAPI) -> None:
    async def service_error(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, ServiceError)
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    async def http_error(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, HTTPException)
        headers = dict(err.headers or {})
        if err.status_code == 404:
            message = f"no such page: {request.url.path} (pages: {PAGES})"
        elif err.status_code == 405:
            allowed = headers.get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        else:
            message = str(err.detail)
        return JSONResponse({"error": message}, status_code=err.status_code, headers=headers)

    async def invalid(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in err.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=400)

    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.error("error while handling %s %s", request.method, request.url.path, exc_info=err)
        return JSONResponse({"error": "internal error while handling the request (see the server log)"},
                            status_code=500)  # fmt: skip

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, internal)


def _check_query(request: Request, fmt: str) -> str:
    items = request.query_params.multi_items()
    unknown = sorted({k for k, _ in items} - {"format"})
    if unknown:
        raise ServiceError(400, f"unknown query parameter(s) {', '.join(unknown)} for {request.url.path}")
    if len(items) > 1:
        raise ServiceError(400, "each query parameter may be given once")
    if fmt not in FORMATS:
        raise ServiceError(400, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


async def _upload(request: Request, limit: int, *, timeout: float) -> bytes:
    """The image bytes of a raw-body or multipart upload, refused (413) as soon as they pass ``limit``, or
    (408) when they have not all arrived within ``timeout`` seconds (a stalled client holds no slot for ever)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = kind == "multipart/form-data"
    try:
        with anyio.fail_after(timeout):
            body = await _read_body(request, limit + MULTIPART_SLACK if multipart else limit)
    except TimeoutError as err:
        request.state.body_done = True  # nothing more to wait for: the connection closes after the answer
        raise ServiceError(408, f"the upload did not arrive within {timeout:g} s",
                           headers={"Connection": "close"}) from err
    if not multipart:
        return body

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    try:
        part = form.get("file")
        if part is None or isinstance(part, str):
            raise ServiceError(400, "the multipart form has no file: send the image as the form field `file`")
        data = await part.read()  # the form keeps parts in memory or in anonymous temporary files
    finally:
        await form.close()
    if len(data) > limit:
        raise ServiceError(413, f"upload of {len(data)} bytes exceeds the limit of {limit}")
    return data


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, raw or chunked, read as it streams and refused (413) once past ``limit``."""
    length = request.headers.get("content-length")
    if length is None and "chunked" not in request.headers.get("transfer-encoding", "").lower():
        raise ServiceError(411, "a Content-Length header (or Transfer-Encoding: chunked) is required")
    declared = int(length) if length is not None and length.isdigit() else None
    if declared is not None and declared > limit:
        await _drain(request, DRAIN_BYTES)
        raise ServiceError(413, f"upload of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            request.state.body_done = True
            total = f" of {declared}" if declared is not None else ""
            raise ServiceError(400, f"upload ended after {size}{total} bytes")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await _drain(request, DRAIN_BYTES)
            else:
                request.state.body_done = True
            raise ServiceError(413, f"upload of more than {limit} bytes exceeds the limit of {limit}")
        chunks.append(chunk)
        if not message.get("more_body", False):
            request.state.body_done = True
            return b"".join(chunks)


async def _drain(request: Request, budget: int, *, seconds: float = DRAIN_SECONDS) -> None:
    """Read and drop up to ``budget`` bytes, for at most ``seconds``, of a body not yet read to its end, so that
    the client reads the answer rather than a reset connection (past either bound the connection just closes)."""
    if getattr(request.state, "body_done", False) or request.method in ("GET", "HEAD"):
        return
    request.state.body_done = True
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) == 0):
        return
    seen = 0
    with anyio.move_on_after(seconds):
        while seen <= budget:
            message = await request.receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                break
            seen += len(message.get("body", b""))
