"""Which images to label next, behind one interface: ``select(strategy, pool, n=...)``.

The strategies the label-efficiency benchmark compares (``benchmarks/label_efficiency.py``):

``random``
    ``n`` images drawn uniformly without replacement (seeded): the baseline that is hard to beat.
``foreground-random``
    Random, but spread over how much foreground the current model sees (nnActive's point: in segmentation,
    the baseline to beat samples foreground, not just images). The run predicts every pool image; images
    with a non-empty predicted foreground are sorted by their predicted foreground fraction and cut into
    ``n`` strata of (nearly) equal size; one image is drawn at random from each. If fewer than ``n`` images
    have any predicted foreground, all of them are taken and the rest drawn at random. Without a run (the
    first round) it is ``random``, and the selection says so.
``typical``
    The cold-start picks (:mod:`unetkit.infer.coldstart`): the most typical image of each of ``n`` k-means
    clusters of the pretrained encoder's features. Needs no run.
``suggest``
    Uncertainty over TTA views with diversity (:mod:`unetkit.infer.suggest`). Needs a run; without one (the
    first round) it is ``typical``, and the selection says so.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STRATEGIES = ("random", "foreground-random", "typical", "suggest")


@dataclass(frozen=True)
class Selection:
    """The chosen files (in the order chosen), the strategy that chose them and, when it fell back, why."""

    files: list[Path]
    strategy: str
    note: str = ""


def select(
    strategy: str, pool: Sequence[Path], *, n: int, seed: int = 0, run: str | Path | None = None, device: str = "cpu"
) -> Selection:
    """Choose ``n`` of the ``pool`` files to label with ``strategy`` (see the module docstring).

    Args:
        strategy: one of :data:`STRATEGIES`.
        pool: candidate image files (already without the labelled ones).
        n: how many to choose.
        seed: seeds the random draws and k-means.
        run: the current run (``foreground-random`` and ``suggest``); None in the first round.
        device: torch device for the run's predictions and the encoder.

    Raises:
        ValueError: an unknown strategy, or ``n`` outside ``1 .. len(pool)``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    files = sorted(Path(p) for p in pool)
    if not 1 <= n <= len(files):
        raise ValueError(f"cannot choose {n} of {len(files)} candidate image(s)")
    if strategy == "random":
        return Selection(random_pick(files, n=n, seed=seed), strategy)
    if strategy == "foreground-random":
        if run is None:
            return Selection(random_pick(files, n=n, seed=seed), "random", "no run yet: random")
        fractions = predicted_foreground(run, files, device=device)
        return Selection(stratified_pick(files, fractions, n=n, seed=seed), strategy)
    if strategy == "suggest" and run is not None:
        return Selection(_suggested(run, files, n=n, device=device), strategy)
    from unetkit.infer.coldstart import pool_features, typical_picks

    _, features = pool_features(files, device=device)
    chosen = [files[row] for row, _, _ in typical_picks(features, n, seed=seed)]
    return Selection(chosen, "typical", "" if strategy == "typical" else "no run yet: typical")


def random_pick(files: Sequence[Path], *, n: int, seed: int) -> list[Path]:
    """``n`` of ``files`` drawn uniformly without replacement with ``numpy.random.default_rng(seed)``."""
    rows = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
    return [files[int(i)] for i in rows]


def stratified_pick(files: Sequence[Path], fractions: Sequence[float], *, n: int, seed: int) -> list[Path]:
    """One random file from each of ``n`` equal-count strata of the files with ``fraction > 0`` (sorted by
    fraction); with fewer than ``n`` such files, all of them and random others.

    Example:
        >>> paths = [Path(f"{i}.png") for i in range(6)]
        >>> sorted(p.name for p in stratified_pick(paths, [0, 0.1, 0.2, 0, 0.5, 0.6], n=2, seed=0))[0] in ("1.png", "2.png")
        True
    """
    rng = np.random.default_rng(seed)
    with_fg = [i for i in np.argsort(fractions, kind="stable") if fractions[int(i)] > 0]
    if len(with_fg) <= n:
        rest = [i for i in range(len(files)) if i not in set(with_fg)]
        extra = rng.choice(len(rest), size=n - len(with_fg), replace=False)
        return [files[int(i)] for i in with_fg] + [files[rest[int(j)]] for j in extra]
    strata = np.array_split(np.array(with_fg), n)
    return [files[int(stratum[int(rng.integers(len(stratum)))])] for stratum in strata]


def predicted_foreground(run: str | Path, files: Sequence[Path], *, device: str = "cpu") -> list[float]:
    """The fraction of each file's pixels the run labels foreground (label != 0)."""
    from unetkit.data.io import read_image
    from unetkit.infer.predictor import Predictor

    predictor = Predictor.from_run(run, device=device)
    return [float((predictor(read_image(p).array.astype(np.float32)).labels != 0).mean()) for p in files]


def _suggested(run: str | Path, files: Sequence[Path], *, n: int, device: str) -> list[Path]:
    from unetkit.infer.suggest import SuggestOptions, suggest

    with tempfile.TemporaryDirectory() as out:
        result = suggest(run, [str(p) for p in files], SuggestOptions(n=n, device=device), out=out)
    return [p.image.path for p in result.picks]


def write_selection(selection: Selection, out: str | Path) -> list[Path]:
    """``out/suggestions.csv`` (``unetkit suggest``'s columns; the scores of a strategy that has none are ``nan``)
    and ``out/contact_sheet.png`` of the chosen files, in the order chosen."""
    import math

    from unetkit.data.io import read_image
    from unetkit.infer.coldstart import THUMB
    from unetkit.infer.suggest import ImageScore, Pick
    from unetkit.infer.suggest_report import thumbnails, write_contact_sheet, write_csv

    picks = []
    for rank, path in enumerate(selection.files, start=1):
        image = read_image(path).array
        thumb = thumbnails(image, np.zeros(image.shape[1:], dtype=np.float32), size=THUMB)[0]
        scored = ImageScore(path=path, score=math.nan, uncertainty=math.nan, foreground_uncertainty=math.nan,
                            foreground_fraction=math.nan, tta_variance=math.nan, features=np.zeros(0),
                            thumbs=(thumb, None))
        picks.append(Pick(rank=rank, image=scored, distance=math.nan, value=math.nan))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_csv(picks, out / "suggestions.csv"), write_contact_sheet(picks, out / "contact_sheet.png")]


def without_run_images(run: str | Path, files: Sequence[Path]) -> list[Path]:
    """``files`` less the run's own training and validation images (same path or same content, as
    ``unetkit suggest`` skips them)."""
    from unetkit.config import Plan
    from unetkit.infer.suggest import labelled_files

    plan_file = Path(run) / "plan.yaml"
    known = labelled_files(Plan.load(plan_file))
    return [p for p in files if known.side(p) is None]
