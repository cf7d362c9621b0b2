"""``report.json``, ``report.md`` and ``metrics.png`` of a study: means with 95 % bootstrap intervals per variant
and TTA level, and paired differences against the first model and against the first TTA level.

Differences are ``other - reference`` on the same images (a lower HD95 or time is better, a higher everything
else); ``relative`` is that difference over the reference's mean. A difference is called significant when its
95 % paired-bootstrap interval (:data:`unetkit.metrics_boundary.BOOTSTRAP_RESAMPLES` resamples, seed 0)
excludes 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from unetkit._io import atomic_path, write_json_atomic, write_text_atomic
from unetkit.metrics_boundary import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_mean,
    describe_difference,
    paired_difference,
)

if TYPE_CHECKING:
    from unetkit.compare.scoring import Scores

METRICS = ("dice", "iou", "precision", "recall", "boundary_f1", "hd95", "nsd", "view_agreement", "shift_consistency",
           "fold_agreement", "seconds_per_image")  # fmt: skip
COMPARED = ("dice", "iou", "boundary_f1", "hd95", "nsd", "view_agreement", "shift_consistency", "seconds_per_image")
LABELS = {"dice": "Dice", "iou": "IoU", "precision": "precision", "recall": "recall", "boundary_f1": "boundary F1",
          "hd95": "HD95", "nsd": "NSD", "view_agreement": "view agreement", "shift_consistency": "shift consistency",
          "fold_agreement": "fold agreement", "seconds_per_image": "s/image"}  # fmt: skip
PLOTTED = ("dice", "boundary_f1", "hd95", "view_agreement", "shift_consistency", "seconds_per_image")


def _column(rows: list[dict[str, Any]], metric: str) -> list[float] | None:
    """The metric over the images, or None where it was not measured (for any image)."""
    values = [r.get(metric) for r in rows]
    return None if not values or any(v is None for v in values) else [float(v) for v in values]  # type: ignore[arg-type]


def _interval(values: list[float] | None) -> dict[str, float] | None:
    if values is None:
        return None
    ci = bootstrap_mean(values)
    return {"mean": ci.mean, "low": ci.low, "high": ci.high}


def metric_names(scores: Scores) -> list[str]:
    """The metrics the rows hold, in report order (the per-shift columns after shift consistency)."""
    seen = {k for by_level in scores.rows.values() for rows in by_level.values() for r in rows for k in r}
    shifts = sorted((k for k in seen if k.startswith("shift_consistency_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    names = [m for m in METRICS if m in seen]
    at = names.index("shift_consistency") + 1 if "shift_consistency" in names else len(names)
    return names[:at] + shifts + names[at:]


def summarise(scores: Scores) -> dict[str, dict[str, dict[str, Any]]]:
    """``summary[model][tta][metric]`` = mean with its 95 % interval (None where not measured)."""
    names = metric_names(scores)
    return {model: {level: {m: _interval(_column(rows, m)) for m in names} for level, rows in by_level.items()}
            for model, by_level in scores.rows.items()}  # fmt: skip


def _difference(label: str, metric: str, base: list[float] | None, other: list[float] | None) -> dict[str, Any] | None:
    if base is None or other is None:
        return None
    diff = paired_difference(base, other)
    ref = sum(base) / len(base)
    return {"label": label, "metric": metric, "mean": diff.mean, "low": diff.low, "high": diff.high,
            "images": diff.n, "significant": diff.significant, "relative": diff.mean / ref if ref else None,
            "text": describe_difference(label, LABELS.get(metric, metric), diff)}  # fmt: skip


def differences(scores: Scores, *, models: list[str], levels: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Paired differences of every compared metric: each model vs the first, each TTA level vs the first."""
    vs_model, vs_tta = [], []
    first, none = models[0], levels[0]
    for model in models[1:]:
        for level in levels:
            for m in COMPARED:
                d = _difference(f"{model} vs {first} (TTA {level})", m, _column(scores.rows[first][level], m),
                                _column(scores.rows[model][level], m))  # fmt: skip
                if d:
                    vs_model.append({"model": model, "reference": first, "tta": level, **d})
    for model in models:
        for level in levels[1:]:
            for m in COMPARED:
                d = _difference(f"{model}: TTA {level} vs {none}", m, _column(scores.rows[model][none], m),
                                _column(scores.rows[model][level], m))  # fmt: skip
                if d:
                    vs_tta.append({"model": model, "tta": level, "reference": none, **d})
    return {"vs_first_model": vs_model, "vs_first_tta": vs_tta}


def write_report(out: Path, scores: Scores, *, options: dict[str, Any]) -> dict[str, Any]:
    """Write ``out/report.json``, ``out/report.md`` and ``out/metrics.png``; return the report."""
    models, levels = list(options["models"]), list(options["tta"])
    report: dict[str, Any] = {
        "options": options,
        "held_out": scores.held_out,
        "images": scores.keys,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "level": 0.95, "seed": 0, "method": "percentile"},
        "metrics": metric_names(scores),
        "summary": summarise(scores),
        "differences": differences(scores, models=models, levels=levels),
        "per_image": scores.rows,
    }
    write_json_atomic(out / "report.json", report)
    report["plot"] = write_plot(out / "metrics.png", report)
    write_text_atomic(out / "report.md", markdown(report))
    return report


def _cell(value: dict[str, float] | None) -> str:
    if value is None:
        return "-"
    return f"{value['mean']:.3f} [{value['low']:.3f}, {value['high']:.3f}]"


def _length(opts: dict[str, Any]) -> str:
    return f"{opts['steps']} steps" if opts.get("steps") else f"{opts['time_budget_s']:g} s"


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown page: what was compared, the table of means, the paired differences."""
    opts, names = report["options"], [m for m in report["metrics"] if not m.startswith("shift_consistency_")]
    lines = [
        "# unetkit compare", "",
        f"- models: {', '.join(opts['models'])}; TTA: {', '.join(opts['tta'])}",
        f"- training budget: {_length(opts)} per variant" + (f" and fold ({opts['folds']} folds)"
                                                           if opts["folds"] else ""),
        f"- scored on {report['held_out']}",
        f"- boundary F1 tolerance {opts['tolerance']:g} px (mm for volumes); shift consistency over shifts of "
        f"{', '.join(str(k) for k in opts['shifts'])} px; HD95 in px (mm for volumes)",
        f"- means with 95 % percentile-bootstrap intervals ({report['bootstrap']['resamples']} resamples of the "
        "images, seed 0); differences are paired on the same images", "",
        "| model | TTA | " + " | ".join(LABELS.get(m, m) for m in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]  # fmt: skip
    for model, by_level in report["summary"].items():
        for level, values in by_level.items():
            lines.append(f"| {model} | {level} | " + " | ".join(_cell(values[m]) for m in names) + " |")
    for key, title in (("vs_first_model", "Variants vs the first model"), ("vs_first_tta", "TTA vs the first level")):
        lines += ["", f"## {title}", ""]
        lines += [f"- {d['text']}" + (f" ({d['relative']:+.1%})" if d["relative"] is not None else "")
                  for d in report["differences"][key]] or ["- (nothing to compare)"]  # fmt: skip
    if report.get("plot"):
        lines += ["", f"![metrics]({report['plot']})"]
    return "\n".join(lines) + "\n"


def write_plot(path: Path, report: dict[str, Any]) -> str | None:
    """Bars of the main metrics per model and TTA level with their intervals; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    summary = report["summary"]
    models, levels = list(summary), list(next(iter(summary.values())))
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(3.2 * len(PLOTTED), 3.2))
    width = 0.8 / len(levels)
    for ax, metric in zip(axes, PLOTTED, strict=True):
        for j, level in enumerate(levels):
            cells = [summary[m][level].get(metric) for m in models]
            xs = [i + j * width for i, c in enumerate(cells) if c]
            means = [c["mean"] for c in cells if c]
            errs = [[c["mean"] - c["low"] for c in cells if c], [c["high"] - c["mean"] for c in cells if c]]
            ax.bar(xs, means, width, yerr=errs, label=level, capsize=2)
        ax.set_title(LABELS[metric])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], models, rotation=30, fontsize=7)
    axes[0].legend(title="TTA", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path.name


def load_report(path: Path) -> dict[str, Any]:
    """A ``report.json`` read back (size-limited; it may come from someone else)."""
    from unetkit.untrusted import load_json_limited

    data = load_json_limited(path, what="compare report", max_bytes=64 << 20)
    if not isinstance(data, dict) or "summary" not in data:
        raise ValueError(f"{path}: not a unetkit compare report")
    return data


__all__ = ["COMPARED", "METRICS", "differences", "load_report", "markdown", "metric_names",
           "summarise", "write_plot", "write_report"]  # fmt: skip
