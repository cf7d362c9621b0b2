"""HTTP service: ``unetkit serve RUN`` answers ``POST /predict`` with masks and serves a small web page.

:mod:`unetkit.serve.app` holds what is done with an upload (no HTTP in it); :mod:`unetkit.serve.server`
the standard-library HTTP layer. No web framework is needed.
"""

from unetkit.serve.app import Limits, SegmentationService, ServiceError
from unetkit.serve.server import make_server

__all__ = ["Limits", "SegmentationService", "ServiceError", "make_server"]
