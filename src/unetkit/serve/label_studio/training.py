"""Fine-tunes in a background process, one at a time; a finished one hands its decision to a callback.

:class:`FineTuner` starts ``python -m unetkit.serve.label_studio.finetune JOB.json`` (output in the version's
``finetune.log``) and a thread that waits for it; a second start while one runs raises :class:`Busy`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unetkit.serve.label_studio.finetune import DECISION, FineTuneJob, write_job

log = logging.getLogger("unetkit.label_studio")


class Busy(RuntimeError):
    """A fine-tune is already running; the message says since when and where."""


class FineTuner:
    """Runs at most one fine-tune process; ``on_done(job, decision or None, message)`` gets each outcome."""

    def __init__(self, on_done: Callable[[FineTuneJob, dict[str, Any] | None, str], None]) -> None:
        self._on_done = on_done
        self._lock = threading.Lock()
        self._running: tuple[FineTuneJob, float] | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether a fine-tune process is running now."""
        return self._running is not None

    def start(self, job: FineTuneJob) -> None:
        """Write ``job`` into its version folder and start it in the background.

        Raises:
            Busy: another fine-tune is running.
        """
        with self._lock:
            if self._running is not None:
                other, since = self._running
                raise Busy(f"a fine-tune is already running ({Path(other.out).name}, started "
                           f"{time.monotonic() - since:.0f} s ago); this training event is ignored and the served "
                           "model is unchanged")  # fmt: skip
            out = Path(job.out)
            out.mkdir(parents=True, exist_ok=True)
            write_job(job, out / "job.json")
            self._running = (job, time.monotonic())
        self._thread = threading.Thread(target=self._run, args=(job,), name="unetkit-fine-tune", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running fine-tune (and its callback); True when none is left running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def _run(self, job: FineTuneJob) -> None:
        out = Path(job.out)
        command = [sys.executable, "-m", "unetkit.serve.label_studio.finetune", str(out / "job.json")]
        try:
            with (out / "finetune.log").open("wb") as logfile:
                code = subprocess.call(command, stdout=logfile, stderr=subprocess.STDOUT)
            decision = _read_decision(out / DECISION) if code == 0 else None
            message = "" if decision is not None else f"fine-tune {out.name} failed (exit {code}); see {out / 'finetune.log'}"
            self._on_done(job, decision, message)
        except Exception:  # noqa: BLE001 - a background thread: log it, never lose the served model
            log.exception("fine-tune %s: unexpected error", out.name)
        finally:
            with self._lock:
                self._running = None


def _read_decision(path: Path) -> dict[str, Any] | None:
    from unetkit.untrusted import UntrustedFileError, load_json_limited

    try:
        raw = load_json_limited(path, what="fine-tune decision", max_bytes=1 << 20)
    except UntrustedFileError:
        return None
    return raw if isinstance(raw, dict) else None
