"""Progress of diffusion training and sampling: a tqdm bar on a terminal, one line every few steps in a log."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressReporter:
    """A tqdm bar on a terminal; otherwise one line every ``every`` steps (logs stay readable).

    Use as a context manager and call :meth:`update` with the steps done and the loss (or None).
    """

    def __init__(self, *, total: int | None, unit: str, every: int, stream: TextIO | None = None) -> None:
        self.total, self.unit, self.every = total, unit, every
        self.stream = stream or sys.stdout
        self.bar: Any = None
        self.start = time.perf_counter()
        self.last = 0

    def __enter__(self) -> ProgressReporter:
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit=self.unit, file=self.stream)
        return self

    def update(self, done: int, loss: float | None) -> None:
        if self.bar is not None:
            self.bar.update(done - self.last)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        elif done % self.every == 0 or done == self.total:
            of = f"/{self.total}" if self.total else ""
            tail = f" loss {loss:.4f}" if loss is not None else ""
            print(f"{self.unit} {done}{of}{tail} ({time.perf_counter() - self.start:.0f} s)", file=self.stream, flush=True)
        self.last = done

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["ProgressReporter"]
