"""A real Label Studio for the ML backend tests: its own virtual environment (``make .venv-labelstudio``),
started on a free loopback port with a temporary data folder, SQLite, no sign-up, no analytics, no version
check, and one user whose legacy API token the tests use.

``UNETKIT_LABEL_STUDIO_BIN`` names the ``label-studio`` executable (default: the repository's
``.venv-labelstudio/bin/label-studio``). Missing, the tests skip with the reason; with ``CI=true`` they fail.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / ".venv-labelstudio" / "bin" / "label-studio"
START_TIMEOUT_S = 600.0  # first start migrates a fresh SQLite database: minutes on two busy cores
USER, PASSWORD = "unetkit@example.com", "unetkit-test-password"


def label_studio_bin() -> Path:
    """The ``label-studio`` executable; skips (fails in CI) when it is not installed."""
    path = Path(os.environ.get("UNETKIT_LABEL_STUDIO_BIN") or DEFAULT_BIN)
    if not path.is_file():
        message = (f"Label Studio not found at {path}: `make .venv-labelstudio/.installed` builds it "
                   "(or set UNETKIT_LABEL_STUDIO_BIN)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Studio:
    """A running Label Studio: ``url``, the API ``token``, and a client that sends it."""

    url: str
    token: str
    log: Path
    user: str = USER
    password: str = PASSWORD

    def client(self, timeout: float = 300.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=timeout)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of one API call; raises with Label Studio's answer on an error status."""
        with self.client() as client:
            response = client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response.json() if response.content else None


@contextmanager
def running_label_studio(data_dir: Path) -> Iterator[Studio]:
    """Start Label Studio; yield once its API answers with the test user's token; stop it.

    ``UNETKIT_TEST_LABEL_STUDIO_URL`` + ``_TOKEN`` (+ ``_USER``, ``_PASSWORD``) use one already running instead
    (while writing tests).
    """
    if os.environ.get("UNETKIT_TEST_LABEL_STUDIO_URL"):
        yield Studio(url=os.environ["UNETKIT_TEST_LABEL_STUDIO_URL"].rstrip("/"),
                     token=os.environ["UNETKIT_TEST_LABEL_STUDIO_TOKEN"], log=data_dir / "none.log",
                     user=os.environ.get("UNETKIT_TEST_LABEL_STUDIO_USER", USER),
                     password=os.environ.get("UNETKIT_TEST_LABEL_STUDIO_PASSWORD", PASSWORD))
        return
    binary = label_studio_bin()
    port, token = free_port(), secrets.token_hex(20)
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LATEST_VERSION_CHECK": "false",
           "COLLECT_ANALYTICS": "false", "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "SENTRY_DSN": "",
           "FRONTEND_SENTRY_DSN": "", "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
           "DJANGO_DB": "sqlite", "DEBUG": "false", "LOG_LEVEL": "WARNING"}  # fmt: skip
    log = data_dir / "label-studio.log"
    command = [str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
               "--username", USER, "--password", PASSWORD, "--user-token", token, "--enable-legacy-api-token"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir)
    studio = Studio(url=f"http://127.0.0.1:{port}", token=token, log=log)
    try:
        _wait_until_up(studio, process)
        yield studio
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def _wait_until_up(studio: Studio, process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    until = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < until:
        if process.poll() is not None:
            raise AssertionError(f"Label Studio exited ({process.returncode}): {studio.log.read_text()[-3000:]}")
        try:
            with studio.client(timeout=10) as client:
                if client.get("/api/current-user/whoami").status_code == 200:
                    return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"Label Studio did not answer within {START_TIMEOUT_S:g} s: {studio.log.read_text()[-3000:]}")
