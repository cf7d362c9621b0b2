"""Fetching a task's image from Label Studio, with the backend's own URL and token and the service's limits.

A task's image reference is what Label Studio stores in ``task.data``: an upload (``/data/upload/3/ab12-x.png``),
a local file (``/data/local-files/?d=folder/x.png``) or a full URL. Relative references are resolved against
the configured Label Studio URL; a full URL is fetched only when it points at that same Label Studio (the token
never leaves for another host, and the backend never becomes a proxy to arbitrary addresses). The token goes
as ``Authorization: Token <key>`` (Label Studio's API key).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass


class FetchError(ValueError):
    """A task image that cannot be fetched; the message names the reference and why."""


@dataclass(frozen=True)
class LabelStudio:
    """Where Label Studio is and the key the backend uses on it (from options or the environment only).

    Attributes:
        url: its base URL, e.g. ``http://127.0.0.1:8080``.
        token: its API key (legacy token), sent as ``Authorization: Token <key>``.
        timeout_s: longest one request to it may take.
    """

    url: str
    token: str = ""
    timeout_s: float = 60.0

    def headers(self) -> dict[str, str]:
        """The request headers with the key (none without a key)."""
        return {"Authorization": f"Token {self.token}"} if self.token else {}


def resolve(reference: str, *, base: str) -> str:
    """The absolute URL of a task's image reference on the Label Studio at ``base``.

    Raises:
        FetchError: a reference that is no string, not http(s), or on another host than ``base``.
    """
    if not isinstance(reference, str) or not reference:
        raise FetchError("the task has no image reference")
    origin = urllib.parse.urlsplit(base.rstrip("/") + "/")
    url = urllib.parse.urljoin(base.rstrip("/") + "/", reference)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"image {reference[:200]!r}: only http(s) references are fetched")
    if (parts.scheme, parts.netloc) != (origin.scheme, origin.netloc):
        raise FetchError(f"image {reference[:200]!r} is not served by Label Studio at {base}: import it "
                         "into Label Studio (upload, local files or cloud storage) so the backend can fetch it")
    return url


class _KeyStaysHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects (Label Studio sends cloud-storage images to presigned URLs) without the key: urllib
    would copy the ``Authorization`` header to whatever host the redirect names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def fetch(reference: str, *, studio: LabelStudio, max_bytes: int) -> bytes:
    """The bytes of a task image, at most ``max_bytes``.

    Raises:
        FetchError: a reference that :func:`resolve` refuses, an HTTP error, a network error, or too many bytes.
    """
    url = resolve(reference, base=studio.url)
    request = urllib.request.Request(url, headers=studio.headers())
    opener = urllib.request.build_opener(_KeyStaysHome)
    try:
        with opener.open(request, timeout=studio.timeout_s) as response:
            body = response.read(max_bytes + 1)
    except urllib.error.HTTPError as err:
        raise FetchError(f"image {reference[:200]!r}: Label Studio answered {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise FetchError(f"image {reference[:200]!r}: cannot reach Label Studio at {studio.url} ({reason})") from err
    if len(body) > max_bytes:
        raise FetchError(f"image {reference[:200]!r} is larger than the limit of {max_bytes} bytes")
    if not body:
        raise FetchError(f"image {reference[:200]!r}: Label Studio sent an empty file")
    return body
