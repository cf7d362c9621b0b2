"""The HTTP face of the Label Studio ML backend: :func:`create_app` puts a
:class:`~unetkit.serve.label_studio.backend.LabelStudioBackend` on Label Studio's ML backend routes.

Routes
    ``GET /health``: ``{"status": "UP", "model_version": ...}`` (never needs a key; Label Studio polls it).
    ``POST /setup``: the project's labelling config (``schema``) checked against the run's classes.
    ``POST /predict``: ``{"tasks": [...], "label_config": ...}`` -> ``{"results": [{"result", "score",
    "model_version"}, ...]}``.
    ``POST /webhook``: annotation created / updated / deleted, and ``START_TRAINING``.
    ``GET /versions``: every kept version's ``model_version`` (what Label Studio lists), the served one and the
    last fine-tune's decision.

With an API key every route but ``/health`` needs it: ``X-API-Key: KEY``, ``Authorization: Bearer KEY``, or
HTTP Basic authentication with the key as the password (what Label Studio's ML backend settings send when
"basic auth" is chosen). Refusals are JSON ``{"error": "..."}`` with the status naming the problem.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import logging
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from unetkit.serve.label_studio import versions
from unetkit.serve.label_studio.backend import LabelStudioBackend
from unetkit.serve.service import ServiceError

MAX_BODY_BYTES = 64 * 2**20  # a /predict batch of tasks or an annotation event with its brush RLE
log = logging.getLogger("unetkit.label_studio")


def create_app(backend: LabelStudioBackend, *, api_key: str | None = None) -> FastAPI:
    """The FastAPI application answering Label Studio's ML backend protocol for ``backend``."""
    from unetkit._version import __version__

    app = FastAPI(title="unetkit Label Studio ML backend", version=__version__, redoc_url=None)

    @app.exception_handler(ServiceError)
    async def refused(request: Request, err: ServiceError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return backend.health()

    @app.get("/")
    async def index() -> dict[str, Any]:
        return backend.health()

    @app.get("/versions")
    async def current(request: Request) -> dict[str, Any]:
        _authorise(request, api_key)
        kept = await anyio.to_thread.run_sync(versions.all_versions, backend.run)
        return {"versions": [v.model_version for v in kept], "model_version": backend.model_version,
                "version": backend.version.name, "training": backend.trainer.running,
                "last_training": backend.last_training}  # fmt: skip

    for route, method in (("/setup", backend.setup), ("/predict", backend.predict), ("/webhook", backend.webhook)):
        app.add_api_route(route, _handler(method, api_key), methods=["POST"])
    return app


def _handler(method: Any, api_key: str | None) -> Any:
    async def handle(request: Request) -> JSONResponse:
        _authorise(request, api_key)
        payload = await _json_body(request)
        reply = await anyio.to_thread.run_sync(functools.partial(method, payload))
        return JSONResponse(reply, status_code=201 if request.url.path == "/webhook" else 200)

    return handle


async def _json_body(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ServiceError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ServiceError(400, f"the request body is not JSON ({err})") from err
    if not isinstance(payload, dict):
        raise ServiceError(400, "the request body must be a JSON object")
    return payload


def _authorise(request: Request, api_key: str | None) -> None:
    """Refuse (401) a request that does not carry ``api_key`` (no check without a key)."""
    if not api_key:
        return
    given = request.headers.get("x-api-key")
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if given is None and scheme.lower() == "bearer":
        given = value.strip()
    elif given is None and scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            given = ""
    if given is not None and hmac.compare_digest(given.encode(), api_key.encode()):
        return
    raise ServiceError(401, f"{'missing' if given is None else 'wrong'} API key: send it as X-API-Key, "
                            "Authorization: Bearer KEY, or as the basic-auth password", headers={"WWW-Authenticate": "Basic"})  # fmt: skip
