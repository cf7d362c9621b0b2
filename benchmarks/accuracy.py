"""Accuracy benchmark: unetkit's default training against two peers, same data, same wall-clock budget.

    python benchmarks/accuracy.py --datasets isbi,drive,dubai,magnetic --methods unetkit,smp,monai \\
        --budget 10 --work /tmp/acc [--threads N] [--finetune-lite0] [--merge]
    (methods: ``unetkit`` = ``unetkit train`` defaults, which fine-tune the ImageNet EfficientNet-Lite0
    encoder when its weights package is installed; ``unetkit-scratch`` = ``--encoder plain``, trained from
    scratch; ``unetkit-lite0`` = the explicit flags ``--encoder tf_efficientnet_lite0 --encoder-weights FILE``)
    python benchmarks/accuracy.py --self-test        # check the scorer on hand-made arrays

Every method runs in its own subprocess, one after the other, trains for ``--budget`` minutes of
wall-clock (from its first training step), then predicts every test image whole and writes one
class-index PNG per image; one shared scorer (``acc_scoring``) scores all of them. Results go to
``benchmarks/results/accuracy.json`` and ``accuracy.md`` (``--results`` to change).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from acc_data import (
    DEFAULT_ROOT,
    SPECS,
    DatasetSpec,
    Row,
    prediction_path,
    prepare_splits,
    read_rows,
    write_json,
)
from acc_report import collect_environment, write_markdown
from acc_scoring import score_predictions, self_test

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = ("smp", "monai")
METHODS = ("unetkit", *PEERS, "unetkit-scratch", "unetkit-lite0")


# ---------------------------------------------------------------- unetkit invocations (adjust here)
def unetkit_options(spec: DatasetSpec, folder: Path) -> list[str]:
    """Dataset options passed to ``unetkit train`` (how the masks are encoded; nothing else)."""
    if spec.name == "isbi":
        return ["--value-map", "0:1,255:0"]  # membrane (0) is the foreground class 1
    if spec.name == "drive":
        return ["--mask-threshold", "128"]  # FOV comes from the CSV's roi column
    if spec.name == "dubai":
        # Five real classes, no background colour; the table's order gives class indices 0..4.
        return ["--colour-table", str(folder / "colour_table.json"),
                "--ignore-colour", "9B9B9B", "--ignore-colour", "000000"]
    if spec.name == "magnetic":
        return ["--mask-threshold", "128"]
    raise ValueError(f"no unetkit options for dataset {spec.name!r}")


def unetkit_cmd(*args: str) -> list[str]:
    """``unetkit ARGS`` through the current interpreter (works before the package is pip-installed)."""
    return [sys.executable, "-m", "unetkit.cli", *args]


def budget_text(minutes: float) -> str:
    """``--time-budget`` value: ``10m`` for whole minutes, seconds otherwise (``0.5`` -> ``30s``)."""
    return f"{minutes:g}m" if float(minutes).is_integer() else f"{minutes * 60:g}s"


def lite0_options(work: Path) -> list[str]:
    """``--encoder tf_efficientnet_lite0 --encoder-weights FILE``, the packaged ImageNet weights converted once.

    ``tf_efficientnet_lite0`` (TF "SAME" padding, BN eps 1e-3) is the timm variant those weights were
    trained with; ``efficientnet_lite0`` would load them into a differently padded network.

    Raises:
        SystemExit: the Lite0 converter (``unetkit.models.encoders.lite0``) or the weights package is missing.
    """
    if str(REPO / "src") not in sys.path:
        sys.path.insert(0, str(REPO / "src"))  # the children import this checkout's unetkit; so do we
    try:
        lite0 = importlib.import_module("unetkit.models.encoders.lite0")
        convert = lite0.convert_lite0_weights
    except (ModuleNotFoundError, AttributeError) as err:
        raise SystemExit(f"--finetune-lite0: the EfficientNet-Lite0 weight converter "
                         f"(unetkit.models.encoders.lite0.convert_lite0_weights) is not available: {err}") from err
    target = work / "tf_efficientnet_lite0_imagenet.safetensors"
    if not target.is_file():
        try:
            convert(target)
        except (ModuleNotFoundError, FileNotFoundError, ValueError) as err:
            raise SystemExit(f"--finetune-lite0: cannot convert the EfficientNet-Lite0 weights: {err}") from err
    return ["--encoder", "tf_efficientnet_lite0", "--encoder-weights", str(target)]


# ---------------------------------------------------------------- running one method
def run_logged(cmd: list[str], *, log: Path, env: dict[str, str]) -> float:
    """Run ``cmd`` with output appended to ``log``; returns wall seconds. Raises RuntimeError on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"exit code {code} from {' '.join(cmd[:5])} ...; last lines of {log}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def child_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), str(HERE), env.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op pool size in the child
    return env


def run_peer(*, arch: str, spec: DatasetSpec, folder: Path, out: Path, args: argparse.Namespace) -> dict:
    result = out / "result.json"
    cmd = [sys.executable, str(HERE / "acc_peer.py"), "--dataset", spec.name, "--arch", arch,
           "--train-csv", str(folder / "train.csv"), "--test-csv", str(folder / "test.csv"),
           "--budget", str(args.budget), "--pred-dir", str(out / "pred"), "--result", str(result),
           "--seed", str(args.seed)] + (["--threads", str(args.threads)] if args.threads else [])
    wall = run_logged(cmd, log=out / "log.txt", env=child_env(args.threads))
    stats = json.loads(result.read_text())
    stats["wall_seconds"] = wall
    return stats


def run_unetkit(*, spec: DatasetSpec, folder: Path, out: Path, args: argparse.Namespace,
                extra: list[str]) -> dict:
    """``unetkit train`` then ``unetkit predict`` once per image folder (so equal stems never collide)."""
    run_dir, env, log = out / "run", child_env(args.threads), out / "log.txt"
    train_cmd = unetkit_cmd("train", str(folder / "train.csv"), "--out", str(run_dir), "--overwrite",
                            "--time-budget", budget_text(args.budget), *unetkit_options(spec, folder), *extra)
    train_wall = run_logged(train_cmd, log=log, env=env)
    trained = re.findall(r"trained (\d+) steps in ([\d.]+) s", log.read_text(errors="replace"))
    groups: dict[str, list[Row]] = {}
    for row in read_rows(folder / "test.csv"):
        groups.setdefault(row.image.parent.name, []).append(row)
    infer_wall = 0.0
    for name, rows in groups.items():
        cmd = unetkit_cmd("predict", str(run_dir), *[str(r.image) for r in rows], "--out", str(out / "pred" / name),
                          "--no-overlay")
        infer_wall += run_logged(cmd, log=log, env=env)
        for row in rows:
            tif_to_png(prediction_path(out / "pred", row))
    return {"steps": int(trained[-1][0]) if trained else unetkit_steps(run_dir),
            "train_seconds": float(trained[-1][1]) if trained else None,
            "train_wall_seconds": train_wall, "infer_seconds": infer_wall, "wall_seconds": train_wall + infer_wall,
            "torch_threads": args.threads or default_threads(), "run_dir": str(run_dir)}


def tif_to_png(png: Path) -> None:
    """``unetkit predict`` keeps a TIFF input's format (DRIVE): turn ``<stem>.tif`` into the scorer's PNG."""
    tif = png.with_suffix(".tif")
    if png.is_file() or not tif.is_file():
        return
    import numpy as np
    import tifffile
    from PIL import Image

    labels = np.squeeze(tifffile.imread(tif))
    if labels.ndim != 2 or labels.max() > 255:
        raise ValueError(f"{tif}: expected a 2D class-index mask, got shape {labels.shape}")
    tmp = png.with_name(png.name + ".tmp")
    Image.fromarray(labels.astype(np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, png)


def unetkit_steps(run_dir: Path) -> int | None:
    """Optimiser steps done, from ``state.json`` (``scalars.step``); None if unknown."""
    state = run_dir / "state.json"
    if state.is_file():
        step = json.loads(state.read_text()).get("scalars", {}).get("step")
        if isinstance(step, int):
            return step
    return None


def default_threads() -> int:
    import torch

    return torch.get_num_threads()


def run_method(*, method: str, spec: DatasetSpec, args: argparse.Namespace, lite0: list[str]) -> dict:
    """Train + predict + score one method on one dataset; failures are recorded, not raised."""
    folder = args.work / spec.name
    out = folder / method
    print(f"[{dt.datetime.now():%H:%M:%S}] {spec.name}: {method} ({args.budget:g} min) ...", flush=True)
    try:
        if method in PEERS:
            stats = run_peer(arch=method, spec=spec, folder=folder, out=out, args=args)
        else:
            extra = {"unetkit-lite0": lite0, "unetkit-scratch": ["--encoder", "plain"]}.get(method, [])
            stats = run_unetkit(spec=spec, folder=folder, out=out, args=args, extra=extra)
        stats.update(score_predictions(spec=spec, rows=read_rows(folder / "test.csv"), pred_dir=out / "pred"))
    except (RuntimeError, ValueError, FileNotFoundError) as err:
        print(f"    FAILED: {err}", flush=True)
        return {"error": str(err)}
    stats["budget_minutes"] = args.budget
    print(f"    {stats['metric']} = {stats['score']:.4f}  (steps: {stats.get('steps')})", flush=True)
    return stats


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="isbi,drive,dubai,magnetic", help=f"comma list of {','.join(SPECS)}")
    p.add_argument("--methods", default="unetkit,smp,monai", help=f"comma list of {','.join(METHODS)}")
    p.add_argument("--budget", type=float, default=10.0, help="training wall-clock minutes per method")
    p.add_argument("--work", type=Path, default=Path("/tmp/acc"), help="splits, runs, predictions, logs")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="shared datasets folder")
    p.add_argument("--results", type=Path, default=HERE / "results", help="where accuracy.json/.md go")
    p.add_argument("--threads", type=int, default=None, help="torch threads per method (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune-lite0", action="store_true",
                   help="add unetkit with the pretrained EfficientNet-Lite0 encoder (needs its converter)")
    p.add_argument("--merge", action="store_true",
                   help="keep results of other datasets/methods already in accuracy.json (same budget only)")
    p.add_argument("--self-test", action="store_true", help="check the scorer on hand-made arrays and exit")
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in args.datasets:
        if name not in SPECS:
            p.error(f"unknown dataset {name!r}; choose from {', '.join(SPECS)}")
    for name in args.methods:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if "unetkit-lite0" in args.methods:
        args.finetune_lite0 = True
    elif args.finetune_lite0:
        args.methods.append("unetkit-lite0")
    if args.budget <= 0:
        p.error("--budget must be positive (minutes)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.self_test:
        self_test()
        print("scorer self-test passed")
        return 0
    args.work = args.work.resolve()
    lite0 = lite0_options(args.work) if args.finetune_lite0 else []  # fail before any training
    report = load_previous(args) if args.merge else {}
    report.update(collect_environment(args))
    datasets = report.setdefault("datasets", {})
    for name in args.datasets:
        spec = SPECS[name]
        prepare_splits(spec=spec, root=args.root, work=args.work)
        entry = datasets.setdefault(name, {"methods": {}})
        entry.update({"metric": spec.metric, "metric_text": spec.metric_text, "classes": list(spec.classes),
                      "n_train": len(read_rows(args.work / name / "train.csv")),
                      "n_test": len(read_rows(args.work / name / "test.csv"))})
        for method in args.methods:
            entry["methods"][method] = run_method(method=method, spec=spec, args=args, lite0=lite0)
            save(report, args.results)  # after every method: a crash later keeps what is done
    failed = [f"{d}/{m}" for d, e in datasets.items() for m, r in e["methods"].items() if "error" in r]
    print(f"wrote {args.results / 'accuracy.json'} and accuracy.md" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


def load_previous(args: argparse.Namespace) -> dict:
    path = args.results / "accuracy.json"
    if not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    if previous.get("budget_minutes") != args.budget:
        raise SystemExit(f"--merge: {path} was run with a {previous.get('budget_minutes')}-minute budget, "
                         f"not {args.budget:g}; results with different budgets are not comparable")
    return previous


def save(report: dict, results: Path) -> None:
    write_json(results / "accuracy.json", report)
    write_markdown(report, results / "accuracy.md")


if __name__ == "__main__":
    sys.exit(main())
