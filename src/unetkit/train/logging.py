"""What a person watching a run sees: a progress bar on a terminal, one line per evaluation otherwise,
a CSV of metrics and a learning-curve PNG."""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path

from unetkit._io import atomic_path

FIELDS = ("step", "loss", "lr", "val_dice", "elapsed")


class MetricsLog:
    """Append-only CSV of evaluations (kept across ``--resume``)."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        if resume and path.is_file():
            with path.open(newline="") as f:
                self._rows = list(csv.DictReader(f))
        else:
            self._rows = []
        self._flush()

    def write(self, **row: float) -> None:
        # After a resume, evaluations the killed run logged past the restored step are replaced.
        self._rows = [r for r in self._rows if int(float(r["step"])) < int(row["step"])]
        self._rows.append({k: row[k] for k in FIELDS})
        self._flush()

    def _flush(self) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(self._rows)

    def plot(self, path: Path) -> None:
        """Loss and validation Dice against step (skipped when matplotlib is absent)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        steps = [float(r["step"]) for r in self._rows]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [float(r["loss"]) for r in self._rows], label="train loss")
        dice = [float(r["val_dice"]) for r in self._rows]
        if not all(math.isnan(d) for d in dice):
            ax.plot(steps, dice, label="val Dice")
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)


class Progress:
    """tqdm bar with loss, metric, step rate and ETA on a terminal; a plain line per evaluation otherwise."""

    def __init__(self, *, total: int | None, start: int = 0, stream=None) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream or sys.stderr
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = total
        self.start_step = start
        self.t0 = time.perf_counter()
        self.bar = None
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=self.stream)

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, step: int, *, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            self.bar.update(0)

    def evaluation(self, step: int, *, loss: float, val_dice: float, best: float) -> None:
        rate = (step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (self.total - step) / rate if self.total and rate > 0 else float("nan")
        line = (
            f"step {step}/{self.total or '?'}  loss {loss:.4f}  val_dice {val_dice:.4f}  best {best:.4f}  "
            f"{rate:.2f} step/s  eta {eta:.0f}s"
        )
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", val_dice=f"{val_dice:.4f}")
            self.bar.write(line)
        else:
            print(line, file=self.stream, flush=True)

    def note(self, line: str) -> None:
        """Print one line (above the bar on a terminal)."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TensorBoardLog:
    """Scalars of each evaluation as TensorBoard events in ``folder`` when ``torch.utils.tensorboard`` is
    importable (the ``tensorboard`` package is installed); otherwise every call does nothing."""

    def __init__(self, folder: Path, *, purge_step: int | None = None) -> None:
        """Args:
        folder: event-file folder (created on the first write).
        purge_step: on resume, the restored step: events a killed run logged at or after it are dropped.
        """
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            self._writer = None
            return
        self._writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def write(self, *, step: int, **scalars: float) -> None:
        """Add each finite scalar under its own tag (a NaN ``val_dice``, i.e. no validation set, is skipped)."""
        if self._writer is None:
            return
        for tag, value in scalars.items():
            if math.isfinite(value):
                self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
