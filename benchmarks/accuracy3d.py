"""3D accuracy benchmark: ``unetkit train`` defaults against MONAI ``BasicUNet(spatial_dims=3)`` on real MRI.

    python benchmarks/accuracy3d.py --budget 10m --out benchmarks/results/accuracy3d.json [--work DIR]
    python benchmarks/accuracy3d.py --quick      # 1-minute budget, 8 test volumes: a smoke run (~3 min)

Data: ``../shared/datasets/msd_task04_hippocampus`` (MSD Task04, 260 labelled volumes, 1 mm MRI crops).
Split: the sorted file names shuffled by ``numpy.random.default_rng(0).permutation``; the first 208 train,
the other 52 test. The 208 become an ``images/`` + ``masks/`` folder of NIfTI symlinks.

Both methods train at once, side by side, for the same wall-clock budget, each with one thread pinned to its
own core (``taskset -c 0`` / ``-c 1``, ``OMP_NUM_THREADS=1``):

* unetkit: ``unetkit train TRAIN --time-budget B`` with no other flag, then ``unetkit predict`` of the test
  volumes (the plan's own inference settings; scored again with ``--tta none`` as ``tta_none``);
* MONAI: the plain recipe of ``acc_peer3d.py`` (whole volumes padded, flips, batch 4, AdamW 1e-3 cosine,
  Dice + CE), then MONAI's sliding-window inference.

One scorer scores both sets of predicted NIfTI files against the labels: per class (1 anterior, 2 posterior)
Dice and HD95 in mm (``unetkit.metrics``, which agrees with MONAI's to 1e-3, see tests/test_metrics.py), mean
over the test volumes. The JSON records the budget, steps, threads, CPU model and flags, both methods'
scores and the differences.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))  # score with this checkout's unetkit, as the children run it
DATA = REPO.parent / "shared" / "datasets" / "msd_task04_hippocampus"
CLASSES = {1: "anterior", 2: "posterior"}
N_TRAIN = 208
# nnU-Net's published 3d_fullres on this task (MSD Task04, 5-fold cross-validation, one GPU, hours per fold).
NNUNET = {"anterior": 0.90, "posterior": 0.89}


def split(root: Path, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, test) case file names: the sorted names in ``default_rng(seed)`` order, 208 / the rest."""
    names = sorted(p.name for p in (root / "images").glob("*.nii.gz"))
    order = np.random.default_rng(seed).permutation(len(names))
    shuffled = [names[i] for i in order]
    return shuffled[:N_TRAIN], shuffled[N_TRAIN:]


def write_train_folder(root: Path, names: list[str], folder: Path) -> None:
    """``folder/images`` + ``folder/masks`` holding symlinks to the training cases."""
    for sub, src in (("images", "images"), ("masks", "labels")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = folder / sub / name
            if not link.exists():
                link.symlink_to(root / src / name)


def env_one_thread() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd]


def run_side_by_side(jobs: dict[str, tuple[list[str], Path]]) -> dict[str, float]:
    """Start every ``(command, log)`` at once; wait for all; wall seconds per job. Raises on a failure."""
    started, procs = time.perf_counter(), {}
    for name, (cmd, log) in jobs.items():
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("a")
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        procs[name] = (subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env_one_thread(),
                                        cwd=REPO), handle)
    walls: dict[str, float] = {}
    while len(walls) < len(procs):  # each job's own wall time, whichever ends first
        for name, (proc, handle) in procs.items():
            if name in walls or proc.poll() is None:
                continue
            handle.close()
            walls[name] = time.perf_counter() - started
            if proc.returncode != 0:
                tail = "\n".join(jobs[name][1].read_text(errors="replace").splitlines()[-15:])
                raise RuntimeError(f"{name} exited with {proc.returncode}; last lines of {jobs[name][1]}:\n{tail}")
        time.sleep(0.5)
    return walls


def score(pred_dir: Path, names: list[str], root: Path) -> dict:
    """Mean Dice and HD95 (mm) per class over the test volumes, plus the per-case values."""
    from unetkit.data.nifti import read_nifti
    from unetkit.metrics import image_metrics

    cases = {}
    for name in names:
        truth, meta = read_nifti(root / "labels" / name)
        pred, _ = read_nifti(pred_dir / name)
        if pred.shape != truth.shape:
            raise ValueError(f"{pred_dir / name}: shape {pred.shape[1:]}, label {truth.shape[1:]}")
        m = image_metrics(pred[0].astype(np.int64), truth[0].round().astype(np.int64), num_classes=3,
                          metrics=("dice", "hd95"), spacing=meta["spacing"])
        cases[name] = {f"{k}_{c}": float(m[k][i]) for k in m for i, c in CLASSES.items()}
    mean = {k: float(np.mean([c[k] for c in cases.values()])) for k in next(iter(cases.values()))}
    mean["dice_mean"] = float(np.mean([mean[f"dice_{c}"] for c in CLASSES.values()]))
    return {"mean": mean, "cases": cases}


def budget_seconds(text: str) -> float:
    from unetkit.config import parse_duration

    return parse_duration(text)


def environment() -> dict:
    from unetkit.precision import cpu_flags

    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return {"cpu": model, "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "python": sys.version.split()[0],
            "torch": torch.__version__, "commit": commit.stdout.strip(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def run(args: argparse.Namespace) -> dict:
    budget = budget_seconds(args.budget)
    train_names, test_names = split(DATA)
    if args.quick:
        test_names = test_names[:8]
    work = Path(args.work)
    write_train_folder(DATA, train_names, work / "train")
    (work / "lists").mkdir(parents=True, exist_ok=True)
    train_list, test_list = work / "lists" / "train.json", work / "lists" / "test.json"
    train_list.write_text(json.dumps([[str(DATA / "images" / n), str(DATA / "labels" / n)] for n in train_names]))
    test_list.write_text(json.dumps([str(DATA / "images" / n) for n in test_names]))
    uk, peer = work / "unetkit", work / "monai"
    cli = [sys.executable, "-m", "unetkit.cli"]
    unetkit_train = cli + ["train", str(work / "train"), "--out", str(uk / "run"), "--overwrite",
                           "--time-budget", args.budget]
    peer_cmd = [sys.executable, str(HERE / "acc_peer3d.py"), "--train-list", str(train_list), "--test-list",
                str(test_list), "--budget-s", str(budget), "--pred-dir", str(peer / "pred"),
                "--result", str(peer / "result.json")]
    peer.mkdir(parents=True, exist_ok=True)
    # Training side by side; the peer predicts right after, while unetkit's predict runs on its own core.
    walls = run_side_by_side({"unetkit": (pinned(0, unetkit_train), uk / "log.txt"),
                              "monai": (pinned(1, peer_cmd), peer / "log.txt")})
    predict = cli + ["predict", str(uk / "run"), *[str(DATA / "images" / n) for n in test_names],
                     "--out", str(uk / "pred"), "--threads", "1"]
    started = time.perf_counter()
    run_side_by_side({"unetkit predict": (pinned(0, predict), uk / "log.txt")})
    predict_seconds = time.perf_counter() - started
    # The plan's mirroring (8 passes) against none, on the same model: what the 3D TTA default buys.
    no_tta = [*predict[:predict.index("--out")], "--out", str(uk / "pred_tta_none"), "--threads", "1", "--tta", "none"]
    run_side_by_side({"unetkit predict --tta none": (pinned(0, no_tta), uk / "log.txt")})
    log = (uk / "log.txt").read_text(errors="replace")
    trained = re.findall(r"trained (\d+) steps in ([\d.]+) s", log)
    peer_result = json.loads((peer / "result.json").read_text())
    results = {
        "unetkit": {"steps": int(trained[-1][0]) if trained else None,
                    "train_seconds": float(trained[-1][1]) if trained else None,
                    "train_wall_seconds": walls["unetkit"], "predict_seconds": predict_seconds,
                    "plan": _plan_summary(uk / "run" / "plan.yaml"), **score(uk / "pred", test_names, DATA),
                    "tta_none": score(uk / "pred_tta_none", test_names, DATA)["mean"]},
        "monai_basicunet": {**peer_result, "wall_seconds": walls["monai"], **score(peer / "pred", test_names, DATA)},
    }
    a, b = results["unetkit"]["mean"], results["monai_basicunet"]["mean"]
    return {
        "benchmark": "accuracy3d", "budget": args.budget, "budget_seconds": budget, "quick": args.quick,
        "data": str(DATA), "split": {"seed": 0, "train": len(train_names), "test": len(test_names)},
        "threads_per_method": 1, "pinning": {"unetkit": "taskset -c 0", "monai_basicunet": "taskset -c 1"},
        "environment": environment(), "results": results,
        "unetkit_minus_monai": {k: a[k] - b[k] for k in a},
        "unetkit_over_monai": {k: a[k] / b[k] if b[k] else None for k in a if k.startswith("dice")},
        "nnunet_published_3d_fullres_gpu": NNUNET,
    }


def _plan_summary(path: Path) -> dict:
    import yaml

    plan = yaml.safe_load(path.read_text())
    return {"model": plan["model"]["kwargs"], "patch_size": plan["train"]["patch_size"],
            "batch_size": plan["train"]["batch_size"], "tta": plan["infer"]["tta"],
            "target_spacing": plan["data"].get("target_spacing")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default=None, help="training budget per method, e.g. 10m (default 10m; 1m --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1-minute budget, 8 test volumes")
    parser.add_argument("--out", default=None, help="result JSON (default benchmarks/results/accuracy3d[_quick].json)")
    parser.add_argument("--work", default="/tmp/unetkit_accuracy3d", help="scratch folder (runs, predictions)")
    args = parser.parse_args()
    args.budget = args.budget or ("1m" if args.quick else "10m")
    out = Path(args.out or HERE / "results" / f"accuracy3d{'_quick' if args.quick else ''}.json")
    result = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["results"].items():
        m = r["mean"]
        print(f"{name:16s} steps {r['steps']}  Dice anterior {m['dice_anterior']:.4f}  posterior "
              f"{m['dice_posterior']:.4f}  mean {m['dice_mean']:.4f}  HD95 {m['hd95_anterior']:.2f} / "
              f"{m['hd95_posterior']:.2f} mm")
    print(f"written {out}")


if __name__ == "__main__":
    main()
