"""Kill-safety trials: start a real ``unetkit`` process, SIGKILL it at a random moment, check what it left.

Every trial takes a seed (``KILL_SEED`` in the environment picks it for ``test_kill.py``; ``benchmarks/kill_loop.sh N``
runs N seeds). Kill moments are real timing, no hooks in the library: uniformly random over the span where the
process writes (after its first output appears), and for training also "the instant a checkpoint's temporary file
is seen" (polling the run folder every millisecond), which lands inside a checkpoint write or the evaluation
right before it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO.parent / "shared" / "datasets"
ISBI = DATASETS / "isbi2012_em_membrane"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "unetkit.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, env=env(), timeout=timeout)


def temporaries(folder: Path) -> list[Path]:
    """Files with the temporary names of unetkit._io.atomic_path (``.<name>.<random>.tmp<suffix>``)."""
    return [p for p in folder.rglob(".*") if p.is_file() and ".tmp" in p.name]


def kill_when(cmd: list[str], *, ready, delay: float, timeout: float = 300) -> tuple[bool, str]:  # type: ignore[no-untyped-def]
    """Start ``cmd``; once ``ready()`` is true wait ``delay`` s (or kill at once when ``delay`` < 0: on sight), SIGKILL.

    Returns ``(killed, stderr)``: killed is False when the process finished first.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    start = time.monotonic()
    try:
        while not ready():
            if proc.poll() is not None:
                return False, proc.communicate()[1]
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{cmd} never got ready")
            time.sleep(0.001)
        if delay > 0:
            end = time.monotonic() + delay
            while time.monotonic() < end:
                if proc.poll() is not None:
                    return False, proc.communicate()[1]
                time.sleep(0.002)
        if proc.poll() is not None:
            return False, proc.communicate()[1]
        proc.send_signal(signal.SIGKILL)
        return True, proc.communicate()[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- predict -------------------------------------------------------------------------------------------------
def predict_inputs(folder: Path, n: int = 24) -> list[Path]:
    """``n`` real ISBI slices (training and unlabelled test images), as they are on disk."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted((ISBI / "images").glob("*.png")) + sorted((ISBI / "test_images_unlabeled").glob("*.png"))
    paths = []
    for i, src in enumerate(sources[:n]):
        dest = folder / f"slice_{i:02d}.png"
        dest.write_bytes(src.read_bytes())
        paths.append(dest)
    return paths


def check_predict_outputs(out: Path, inputs: list[Path]) -> dict[str, list[str]]:
    """Every final-named output is complete and readable; returns stem -> output names present."""
    from unetkit.data.io import read_image

    present: dict[str, list[str]] = {}
    for path in sorted(out.iterdir()):
        if path.name.startswith("."):
            continue  # a killed writer's temporary file: never a final name
        image = read_image(path)  # raises on a partial file
        assert image.spatial_shape == (512, 512), (path, image.spatial_shape)
        stem = path.name.split(".")[0].replace("_prob", "").replace("_overlay", "")
        present.setdefault(stem, []).append(path.name)
    assert set(present) <= {p.stem for p in inputs}
    return present


def predict_trial(seed: int, root: Path, run_dir: Path) -> dict:
    """Kill ``predict`` over 24 files at a random moment; re-run with --skip-existing; check both."""
    from unetkit.data.io import read_image

    rng = random.Random(seed)
    inputs = predict_inputs(root / "in")
    out = root / "out"
    args = ("predict", str(run_dir), str(root / "in"), "--out", str(out), "--prob", "--precision", "fp32")
    killed, err = kill_when(cli(*args), ready=lambda: out.is_dir() and any(out.iterdir()), delay=rng.uniform(0, 3.0))
    assert "Traceback" not in err, err
    before = check_predict_outputs(out, inputs)
    complete = {s for s, names in before.items() if len(names) == 3}
    hashes = {n: (out / n).read_bytes() for s in complete for n in before[s]}
    again = run(*args, "--skip-existing")
    assert again.returncode == 0, again.stderr[-2000:]
    skipped = {line.split(":")[0] for line in again.stdout.splitlines() if "skipped, its outputs exist" in line}
    assert {Path(s).stem for s in skipped} == complete
    after = check_predict_outputs(out, inputs)
    assert all(len(after[p.stem]) == 3 for p in inputs), after
    assert all((out / n).read_bytes() == data for n, data in hashes.items()), "a complete output was rewritten"
    assert not temporaries(out), temporaries(out)
    assert read_image(out / "slice_00.png").array.max() <= 1
    return {"killed": killed, "complete_before": len(complete), "partial_before": len(before) - len(complete)}


# -- export ----------------------------------------------------------------------------------------------------
def export_trial(seed: int, root: Path, run_dir: Path) -> dict:
    """Kill ``export`` at a random moment: model.onnx and its report are absent or complete; a re-run succeeds."""
    rng = random.Random(seed)
    onnx_path = root / "model.onnx"
    args = ("export", str(run_dir), "--out", str(onnx_path))
    # Ready once the process has started its work: python and torch imported (a few seconds).
    started = time.monotonic()
    killed, err = kill_when(cli(*args), ready=lambda: time.monotonic() - started > 4.0, delay=rng.uniform(0, 8.0))
    assert "Traceback" not in err, err
    left = check_export(root)
    again = run(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    check_export(root)
    assert onnx_path.is_file() and not temporaries(root)
    return {"killed": killed, "left": left}


def check_export(root: Path) -> list[str]:
    import onnx

    names = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(path)))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        names.append(path.name)
    return names


# -- train -----------------------------------------------------------------------------------------------------
def train_data(root: Path, n: int = 4) -> Path:
    """``n`` real ISBI pairs cropped to 128 x 128, masks already 0/1."""
    import numpy as np
    from PIL import Image

    for i in range(n):
        with Image.open(ISBI / "images" / f"{i}.png") as im:
            image = np.asarray(im)[:128, :128]
        with Image.open(ISBI / "masks" / f"{i}.png") as im:
            mask = (np.asarray(im)[:128, :128] > 127).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


TRAIN_SETTINGS = ("--encoder", "plain", "--precision", "fp32", "--set", "train.steps=40", "--set", "train.val_every=4",
                  "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=2", "--set", "train.align=false",
                  "--set", "train.warmup_steps=2", "--set", "model.kwargs.width=16", "--set", "model.kwargs.depth=3",
                  "--set", "train.time_budget_s=null")


def check_run(run_dir: Path) -> list[str]:
    """Every final-named file in the run is complete: checkpoints load, JSON parses, the state's tensors load."""
    from safetensors.torch import load_file

    import unetkit
    from unetkit.config import Plan

    present = []
    if (run_dir / "plan.yaml").exists():
        Plan.load(run_dir / "plan.yaml")
        present.append("plan.yaml")
    for name in ("best", "last"):
        if (run_dir / name / "config.json").exists() and (run_dir / name / "model.safetensors").exists():
            unetkit.load_model(run_dir / name)
            present.append(name)
    if (run_dir / "state.json").exists():
        meta = json.loads((run_dir / "state.json").read_text())
        load_file(str(run_dir / meta["tensors"]))
        present.append(f"state@{meta['scalars']['step']}")
    for path in run_dir.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())
    return present


def train_trial(seed: int, root: Path, *, at_checkpoint: bool) -> dict:
    """Kill ``train`` at a random moment (or on sight of a checkpoint's temporary file); then --resume finishes."""
    rng = random.Random(seed)
    data = train_data(root / "data")
    run_dir = root / "run"
    args = ("train", str(data), "--out", str(run_dir), *TRAIN_SETTINGS)
    if at_checkpoint:
        nth = rng.randint(1, 6)  # the nth temporary file seen: a later checkpoint, or best/ vs last/ vs state
        seen: set[str] = set()

        def ready() -> bool:
            if run_dir.is_dir():
                seen.update(p.name for p in temporaries(run_dir))
            return len(seen) >= nth

        killed, err = kill_when(cli(*args), ready=ready, delay=-1)
    else:
        killed, err = kill_when(cli(*args), ready=lambda: (run_dir / "plan.yaml").exists(), delay=rng.uniform(0, 6.0))
    assert "Traceback" not in err, err
    present = check_run(run_dir)
    resumed = run("train", str(data), "--out", str(run_dir), "--resume")
    if not (run_dir / "state.json").exists():
        # Killed before the first checkpoint: nothing to resume, said in one line.
        assert resumed.returncode == 1 and "Traceback" not in resumed.stderr, resumed.stderr[-2000:]
        assert "cannot resume" in resumed.stderr or "plan.yaml" in resumed.stderr, resumed.stderr
        return {"killed": killed, "present": present, "resumed": False}
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = check_run(run_dir)
    assert "state@40" in final and "best" in final and "last" in final, final
    return {"killed": killed, "present": present, "resumed": True}
