"""Label efficiency: test Dice against labelled images, per labelling strategy, with and without ``--unlabelled``.

Datasets: Kvasir-SEG (1000 polyps; images and masks downscaled once so their longest side is ``--size`` px,
320 by default; masks thresholded at 128 since they are lossy JPEG) and magnetic-tile defects (492 tiles,
as stored). Per dataset a seeded test split is held out (Kvasir: 200 images, seed 2026) and never trained on;
the rest is the pool (``pool.csv``). Every training splits the same validation part off the pool
(``train.val_fraction``, seed 0; those masks pick the best checkpoint and are not counted as labels) and trains
on a ``--labels-file`` subset of the training side.

A **chain** is one (strategy, unlabelled on/off, seed): labels grow through the label counts (Kvasir
25/50/100/200, magnetic 25/50/100); at each count the new images are chosen from the rest of the training side
by :func:`unetkit.infer.strategies.select` with the previous count's run (``random``,
``foreground-random``, ``typical``, ``suggest``; the first count has no run: ``foreground-random`` starts
random, ``suggest`` starts typical). With ``--unlabelled`` the run also learns from the whole training side
(its own labelled images are found by path and skipped). A ``full`` run per seed trains on every training
image. Every run uses the default plan (pretrained encoder) and the same fixed step budget (``--steps``), so
the results do not depend on how busy the CPU is; the seed sets ``train.seed`` and the selection draws.

**Resumable**: each finished run writes ``runs/<name>/result.json`` (labels, the labelled keys, test Dice,
seconds); a later call reuses it, so the grid can be run in parts (``--strategies``, ``--seeds``,
``--counts``, ``--datasets``) and killed at any time. ``--jobs 2`` runs two chains at once (one torch thread
each).

Outputs in ``--out``: ``label_efficiency.json`` (CPU flags, budgets, every run), ``label_efficiency.png`` (test
Dice vs labels: mean over seeds with min-max band per strategy, the full-data mean dashed) and
``label_efficiency.md`` (table, and "labels to reach 95 % of full-data Dice" per strategy).

Usage:
    python benchmarks/label_efficiency.py --jobs 2          # the whole grid: hours on 2 CPU cores
    python benchmarks/label_efficiency.py --smoke --out /tmp/le_smoke   # minutes: proves it end to end
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT / "src"))

from unetkit._io import atomic_path, write_json_atomic, write_text_atomic  # noqa: E402
from unetkit.config import apply_overrides  # noqa: E402
from unetkit.data.options import DataConfig  # noqa: E402
from unetkit.untrusted import load_json_limited  # noqa: E402

STRATEGIES = ("random", "foreground-random", "typical", "suggest")


@dataclass(frozen=True)
class Setup:
    """One dataset's protocol."""

    name: str
    folder: str
    test: int  # held-out test images
    counts: tuple[int, ...]  # labelled training images per round
    steps: int  # training steps per run (every run, the full-data one included)
    patch: tuple[int, int]
    batch: int
    size: int = 0  # downscale so the longest side is this many pixels (0: as stored)
    val_fraction: float = 0.1


FULL = (
    Setup("kvasir_seg", "kvasir_seg_polyps", test=200, counts=(25, 50, 100, 200), steps=1500, patch=(256, 256),
          batch=4, size=320),
    Setup("magnetic_tile_defects", "magnetic_tile_defects", test=80, counts=(25, 50, 100), steps=1500,
          patch=(192, 192), batch=4),
)  # fmt: skip
SMOKE = (replace(FULL[0], test=20, counts=(4, 8), steps=8, patch=(128, 128), batch=2, size=160),)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "unetkit.cli", *args]


def run_cli(args: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1"}  # fmt: skip
    with log.open("a") as f:
        f.write("$ " + " ".join(args[2:]) + "\n")
        f.flush()
        done = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[2:5])} ... failed (exit {done.returncode}); see {log}")


# -- data ------------------------------------------------------------------------------------------------


def prepare(setup: Setup, work: Path) -> dict:
    """Test/pool split (seeded), the (downscaled) pool as ``pool.csv``, and its training / validation sides."""
    from unetkit.data.discovery import discover
    from unetkit.data.splits import training_split

    root = DATASETS / setup.folder
    samples = discover(DataConfig(root=str(root), mask_threshold=128)).samples
    keys = sorted(s.key for s in samples)
    perm = np.random.default_rng(2026).permutation(len(keys))
    test = sorted(keys[i] for i in perm[: setup.test])
    by_key = {s.key: s for s in samples}
    work.mkdir(parents=True, exist_ok=True)
    files = {k: _downscaled(by_key[k], work / "data", setup.size) for k in keys}
    pool = [k for k in keys if k not in set(test)]
    lines = ["image,mask,key"] + [f"{files[k][0]},{files[k][1]},{k}" for k in pool]
    write_text_atomic(work / "pool.csv", "\n".join(lines) + "\n")
    pool_samples = discover(DataConfig(root=str(work / "pool.csv"), mask_threshold=128)).samples
    train, val = training_split([s.key for s in pool_samples], [s.group for s in pool_samples],
                                val_fraction=setup.val_fraction, seed=0)
    images = work / "pool_images"  # every pool image: the --unlabelled folder (a run skips its own labelled ones)
    images.mkdir(exist_ok=True)
    for k in pool:
        link = images / f"{k.replace('/', '__')}{Path(files[k][0]).suffix}"
        if not link.exists():
            link.symlink_to(Path(files[k][0]).resolve())
    return {"test": [(files[k][0], files[k][1]) for k in test], "train": sorted(train), "val": val,
            "image_of": {k: Path(files[k][0]) for k in pool}, "unlabelled": images}  # fmt: skip


def _downscaled(sample, folder: Path, size: int) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """The sample's image and mask files, downscaled (longest side ``size``; mask nearest, 0/255) when ``size``."""
    if not size:
        return str(sample.image), str(sample.mask)
    from PIL import Image

    name = sample.key.replace("/", "__")
    image_path, mask_path = folder / "images" / f"{name}.png", folder / "masks" / f"{name}.png"
    if not mask_path.exists():
        image_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(sample.image) as image, Image.open(sample.mask) as mask:
            scale = size / max(image.size)
            shape = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
            image.convert("RGB").resize(shape, Image.Resampling.BICUBIC).save(image_path)
            binary = Image.fromarray(((np.asarray(mask.convert("L")) >= 128) * 255).astype(np.uint8))
            binary.resize(shape, Image.Resampling.NEAREST).save(mask_path)
    return str(image_path), str(mask_path)


def base_plan(setup: Setup, work: Path) -> Path:
    """The planner's default plan (pretrained encoder) for the pool, with the fixed step budget."""
    from unetkit.train.plan import plan_from_data

    data = DataConfig(root=str(work / "pool.csv"), mask_threshold=128)
    plan = plan_from_data(data, device="cpu", time_budget_s=None)
    plan = apply_overrides(plan, [
        f"train.steps={setup.steps}", "train.time_budget_s=null", f"train.patch_size={list(setup.patch)}",
        f"train.batch_size={setup.batch}", f"train.val_every={max(setup.steps // 4, 1)}", "train.align=false",
        f"train.val_fraction={setup.val_fraction}", "train.workers=0", f"train.warmup_steps={max(setup.steps // 10, 1)}",
        f"infer.tile_size={list(setup.patch)}",
    ])  # fmt: skip
    path = work / "plan.yaml"
    plan.save(path)
    return path


def score_test(run: Path, test: list[tuple[str, str]]) -> float:
    """Mean foreground Dice of ``run`` (best checkpoint, no TTA) over the test pairs."""
    import torch

    from unetkit.data.dataset import load_samples
    from unetkit.data.discovery import Sample
    from unetkit.infer.predictor import Predictor
    from unetkit.train.evaluation import foreground_dice

    torch.set_num_threads(1)
    predictor = Predictor.from_run(run, tta="none")
    samples = [Sample(key=Path(i).stem, image=Path(i), mask=Path(m)) for i, m in test]
    scores = [foreground_dice(predictor(s.image.astype(np.float32)).labels, s.mask, num_classes=2,
                              ignore_index=predictor.plan.data.ignore_index)
              for s in load_samples(samples, predictor.plan.data)]  # fmt: skip
    return float(np.mean(scores))


# -- runs and chains -------------------------------------------------------------------------------------


def train_run(ctx: dict, name: str, labelled: list[str], *, seed: int, unlabelled: bool) -> dict:
    """Train and score one run, or read its cached ``result.json``."""
    work: Path = ctx["work"]
    run = work / "runs" / name
    cached = run / "result.json"
    if cached.is_file():
        return load_json_limited(cached, what="benchmark result", max_bytes=2**20)
    listing = work / "lists" / f"{name}.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(listing, "\n".join(labelled) + "\n")
    extra = ["--unlabelled", str(ctx["unlabelled"])] if unlabelled else []
    started = time.perf_counter()
    run_cli(cli("train", str(work / "pool.csv"), "--plan", str(ctx["plan"]), "--labels-file", str(listing),
                "--set", f"train.seed={seed}", "--out", str(run), "--overwrite", *extra), work / "log.txt")  # fmt: skip
    seconds = time.perf_counter() - started
    result = {"name": name, "labels": len(labelled), "keys": labelled, "seed": seed, "unlabelled": unlabelled,
              "dice": score_test(run, ctx["test"]), "train_seconds": round(seconds, 1)}  # fmt: skip
    write_json_atomic(cached, result)
    return result


def run_chain(ctx: dict, strategy: str, seed: int, unlabelled: bool) -> list[dict]:
    """One strategy's rounds for one seed, with or without the unlabelled images."""
    from unetkit.infer.strategies import select

    setup: Setup = ctx["setup"]
    tag = f"{strategy}{'+unl' if unlabelled else ''}_s{seed}"
    labelled: list[str] = []
    previous: Path | None = None
    results = []
    for count in setup.counts:
        name = f"{tag}_{count}"
        cached = ctx["work"] / "runs" / name / "result.json"
        if not cached.is_file():
            rest = [k for k in ctx["train"] if k not in set(labelled)]
            key_of = {ctx["image_of"][k]: k for k in rest}
            chosen = select(strategy, list(key_of), n=count - len(labelled), seed=1000 * seed + count, run=previous)
            labelled = labelled + [key_of[p] for p in chosen.files]
        result = train_run(ctx, name, labelled, seed=seed, unlabelled=unlabelled)
        labelled, previous = list(result["keys"]), ctx["work"] / "runs" / name
        results.append({**result, "strategy": strategy})
        print(f"  {setup.name} {tag}: {count} labels -> test Dice {result['dice']:.4f}", flush=True)
    return results


def run_dataset(setup: Setup, out: Path, args: argparse.Namespace) -> dict:
    work = out / setup.name
    ctx = prepare(setup, work)
    ctx.update(setup=setup, work=work, plan=base_plan(setup, work))
    print(f"{setup.name}: test {len(ctx['test'])}, validation {len(ctx['val'])}, training side {len(ctx['train'])}",
          flush=True)
    chains = [(s, seed, unl) for seed in args.seeds for s in args.strategies for unl in args.unlabelled
              if not unl or s in args.unlabelled_strategies]  # fmt: skip
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        fulls = [pool.submit(train_run, ctx, f"full_s{seed}", ctx["train"], seed=seed, unlabelled=False)
                 for seed in args.seeds] if args.full else []  # fmt: skip
        runs = [r for chain in pool.map(lambda c: run_chain(ctx, *c), chains) for r in chain]
        full = [f.result() for f in fulls]
    return {"setup": asdict(setup), "test_images": len(ctx["test"]), "validation_images": len(ctx["val"]),
            "training_side": len(ctx["train"]), "runs": runs, "full": full, "summary": summarise(runs, full)}


# -- summary and report ----------------------------------------------------------------------------------


def summarise(runs: list[dict], full: list[dict]) -> dict:
    """Per curve (``strategy`` or ``strategy+unlabelled``): labels, mean / min / max Dice over seeds, and the
    fewest labels whose mean Dice reaches 95 % of the mean full-data Dice (None: not within the counts)."""
    full_mean = float(np.mean([f["dice"] for f in full])) if full else None
    curves: dict[str, dict] = {}
    for r in runs:
        label = r["strategy"] + (" + unlabelled" if r["unlabelled"] else "")
        curves.setdefault(label, {}).setdefault(r["labels"], []).append(r["dice"])
    summary: dict = {"full_mean": full_mean, "curves": {}}
    for label, by_count in curves.items():
        counts = sorted(by_count)
        mean = [float(np.mean(by_count[c])) for c in counts]
        reach = [c for c, m in zip(counts, mean, strict=True) if full_mean is not None and m >= 0.95 * full_mean]
        summary["curves"][label] = {"labels": counts, "mean": mean, "min": [min(by_count[c]) for c in counts],
                                    "max": [max(by_count[c]) for c in counts],
                                    "seeds": [len(by_count[c]) for c in counts],
                                    "labels_to_95": min(reach) if reach else None}  # fmt: skip
    return summary


def write_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.5), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        summary = res["summary"]
        for label, c in summary["curves"].items():
            line = ax.plot(c["labels"], c["mean"], marker="o", label=label)[0]
            ax.fill_between(c["labels"], c["min"], c["max"], color=line.get_color(), alpha=0.15)
        if summary["full_mean"] is not None:
            ax.axhline(summary["full_mean"], linestyle="--", color="black",
                       label=f"full data ({res['training_side']} labels)")
            ax.axhline(0.95 * summary["full_mean"], linestyle=":", color="grey", label="95 % of full data")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("labelled training images")
        ax.set_ylabel("test Dice (mean over seeds; band: min-max)")
        ax.set_title(f"{res['setup']['name']} ({res['setup']['steps']} steps per run)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def markdown(results: list[dict]) -> str:
    lines = []
    for res in results:
        s, summary = res["setup"], res["summary"]
        counts = sorted({n for c in summary["curves"].values() for n in c["labels"]})
        full = f"{summary['full_mean']:.4f}" if summary["full_mean"] is not None else "not run"
        lines += [f"### {s['name']}: {res['test_images']} test images, {res['validation_images']} validation, "
                  f"{s['steps']} steps per run (patch {s['patch']}, batch {s['batch']}"
                  f"{', images downscaled to ' + str(s['size']) + ' px' if s['size'] else ''}); full data "
                  f"({res['training_side']} labels): {full}", "",
                  "| strategy | " + " | ".join(str(n) for n in counts) + " | labels to reach 95 % of full-data Dice |",
                  "|---|" + "---|" * (len(counts) + 1)]  # fmt: skip
        for label, c in summary["curves"].items():
            by = dict(zip(c["labels"], zip(c["mean"], c["min"], c["max"], c["seeds"], strict=True), strict=True))
            cells = " | ".join(f"{by[n][0]:.4f} ({by[n][1]:.3f}-{by[n][2]:.3f}, {by[n][3]} seeds)" if n in by else "-"
                               for n in counts)
            reach = c["labels_to_95"] if c["labels_to_95"] is not None else "not reached"
            lines.append(f"| {label} | {cells} | {reach} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_efficiency"))
    parser.add_argument("--smoke", action="store_true", help="tiny budgets on Kvasir: proves the pipeline in minutes")
    parser.add_argument("--jobs", type=int, default=1, help="chains at once (1 torch thread each)")
    parser.add_argument("--datasets", nargs="*", default=None, help="names to run (default: all)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--unlabelled", nargs="+", default=["off", "on"], choices=("off", "on"),
                        help="without and/or with the training side's other images as --unlabelled")
    parser.add_argument("--unlabelled-strategies", nargs="+", default=["random", "typical"], choices=STRATEGIES,
                        help="strategies that also run with --unlabelled (the issue allows random + the best one)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-full", dest="full", action="store_false", help="skip the full-data runs")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: per dataset)")
    parser.add_argument("--counts", type=int, nargs="+", default=None, help="label counts (default: per dataset)")
    args = parser.parse_args(argv)
    args.unlabelled = [u == "on" for u in args.unlabelled]
    from unetkit.precision import cpu_flags

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setups = [s for s in (SMOKE if args.smoke else FULL) if not args.datasets or s.name in args.datasets]
    if args.steps:
        setups = [replace(s, steps=args.steps) for s in setups]
    if args.counts:
        setups = [replace(s, counts=tuple(sorted(set(args.counts)))) for s in setups]
    started = time.perf_counter()
    results = [run_dataset(s, out, args) for s in setups]
    report = {"benchmark": "label_efficiency", "smoke": args.smoke, "jobs": args.jobs, "cpu_flags": cpu_flags(),
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "budget": "fixed training steps per run (train.steps), no time budget; 1 torch thread per job",
              "seconds": round(time.perf_counter() - started, 1), "datasets": results}  # fmt: skip
    write_json_atomic(out / "label_efficiency.json", report)
    write_plot(results, out / "label_efficiency.png")
    write_text_atomic(out / "label_efficiency.md", markdown(results) + "\n")
    print(markdown(results))
    print(f"wrote {out}/label_efficiency.json, .png, .md in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
