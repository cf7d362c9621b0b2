"""HTTP service: ``unetkit serve RUN`` answers ``POST /predict`` with masks and serves a small web page.

:mod:`unetkit.serve.service` holds what is done with an upload (no HTTP in it),
:mod:`unetkit.serve.batching` the worker thread that owns the model and batches concurrent requests' tiles,
:mod:`unetkit.serve.app` the FastAPI application (``create_app(service)``) and :mod:`unetkit.serve.server`
uvicorn around it. FastAPI and uvicorn are the optional extra ``unetkit[serve]``; this package imports them
only in ``app`` and ``server``.
"""

from unetkit.serve.service import Batching, Limits, SegmentationService, ServiceError

__all__ = ["Batching", "Limits", "SegmentationService", "ServiceError"]
