"""Precision, layout and backend on this CPU: what ``auto`` picks against every alternative, in one interleaved run.

Two parts, each optional:

* ``train`` (``--train-data ISBI.csv``): the default plan for that data (``unetkit plan``), its model, optimiser and
  loss, on real patches drawn by the plan's own batcher (drawn once, so only the step is timed): steps/s of
  forward + backward + optimiser step for ``fp32`` contiguous, ``fp32`` channels_last, ``bf16`` autocast channels_last,
  and which of them ``--precision auto`` chooses here (and why). Contenders are interleaved round by round.
* ``infer`` (``--run RUN``): a whole ``Predictor`` call per raw 512 x 512 ISBI slice (20-29, held out by
  ``make demo``), no TTA, for: ``default`` (what ``unetkit predict RUN IMAGE.png`` runs: backend ``auto``, the speed
  tiling), ``previous_default`` (the torch fast path with ``precision auto`` and the plan's training-size tiles, as
  ``unetkit predict`` ran before), ``torch_fp32`` / ``torch_fp32_contiguous`` / ``torch_bf16`` (the torch fast path,
  one pass), ``onnxruntime_fp32`` / ``onnxruntime_int8`` (one pass; int8 only when the run has an accepted graph), and
  ``smp_unet_resnet34_eager_fp32`` (segmentation_models_pytorch ``Unet("resnet34")``, untrained: speed does not
  depend on the weights; the same z-scored image, forward + softmax + argmax). Reported: median seconds per image,
  images/s, ratios against smp, and the test Dice of each unetkit contender on the labelled slices 20-29.

The CPU's kind and flags are recorded: never compare figures across machines. Run it alone (2 cores).

Usage::

    make demo      # writes runs/demo (5-minute training on ISBI slices 0-19)
    PYTHONPATH=src .venv/bin/python benchmarks/bench_precision.py --train-data runs/demo.lists/train.csv \\
        --run runs/demo --rounds 3

Writes ``benchmarks/results/precision.json`` and ``precision.md`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
ISBI = ROOT.parent / "shared" / "datasets" / "isbi2012_em_membrane"
RESULTS = ROOT / "benchmarks" / "results"
VALUE_MAP = {0: 1, 255: 0}  # membrane (black) is the foreground, as in make demo


def interleaved(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every contender once per round, the order rotated each round; each returns its own measured seconds."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(contenders[name]())
    return times


# -- training -------------------------------------------------------------------------------------------------


def train_part(listing: Path, *, steps: int, rounds: int) -> dict:
    import torch

    from unetkit.config import DataConfig
    from unetkit.data.fingerprint import fingerprint
    from unetkit.precision import PrecisionChoice, choose_precision, memory_format
    from unetkit.runtime.run import encoder_name
    from unetkit.train.plan import make_plan
    from unetkit.train.setup import checked_samples, load_examples

    data = DataConfig(root=str(listing), value_map=dict(VALUE_MAP))
    samples = checked_samples(data)
    plan = make_plan(data, fingerprint(samples, data), device="cpu")
    examples, _ = load_examples(plan.data, loaded=samples)
    from unetkit.train.loop import _batcher  # the plan's own patch sampler and augmentation

    batcher = _batcher(plan, examples)
    batches = [batcher.next(np.random.default_rng(i)) for i in range(steps)]
    dims = plan.data.spatial_dims
    choices = {
        "fp32_contiguous": PrecisionChoice("fp32", None, None, "forced"),
        "fp32_channels_last": PrecisionChoice("fp32", None, memory_format(dims), "forced"),
        "bf16_channels_last": PrecisionChoice("bf16", torch.bfloat16, memory_format(dims), "forced"),
    }
    auto = choose_precision("auto", torch.device("cpu"), spatial_dims=dims, inference=False)
    contenders = {name: _step_timer(plan, choice, batches) for name, choice in choices.items()}
    times = interleaved(contenders, rounds)
    rows = {name: {"steps_per_s": steps / statistics.median(t), "seconds": t} for name, t in times.items()}
    fastest = max(rows, key=lambda n: rows[n]["steps_per_s"])
    auto_name = next(n for n, c in choices.items() if (c.dtype, c.layout) == (auto.dtype, auto.layout))
    return {
        "plan": {"model": plan.model.name, "encoder": encoder_name(plan),
                 "patch_size": plan.train.patch_size, "batch_size": plan.train.batch_size},
        "steps_per_round": steps, "rows": rows, "fastest": fastest, "auto": auto.to_dict(), "auto_row": auto_name,
        "auto_vs_fastest": rows[auto_name]["steps_per_s"] / rows[fastest]["steps_per_s"],
    }


def _step_timer(plan, choice, batches) -> Callable[[], float]:  # type: ignore[no-untyped-def]
    import torch

    from unetkit.models import create_model
    from unetkit.precision import autocast, backward_and_step
    from unetkit.train.loop import _loss
    from unetkit.train.setup import build_optimizer

    torch.manual_seed(0)
    model = create_model(plan.model.name, **plan.model.kwargs).train()
    if choice.layout is not None:
        model = model.to(memory_format=choice.layout)
    cfg = plan.train
    optimizer = build_optimizer(model, name=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                encoder_lr_scale=cfg.encoder_lr_scale)
    loss_fn = _loss(plan)
    params = list(model.parameters())

    def run() -> float:
        started = time.perf_counter()
        for x, y in batches:
            if choice.layout is not None:
                x = x.contiguous(memory_format=choice.layout)
            with autocast(torch.device("cpu"), choice.dtype):
                out = model(x)
            out = [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()
            loss = loss_fn(out, y)
            backward_and_step(loss, optimizer=optimizer, parameters=params, grad_clip=cfg.grad_clip, scaler=None)
        return time.perf_counter() - started

    run()  # warm-up: oneDNN primitives, allocator
    return run


# -- inference ------------------------------------------------------------------------------------------------


def isbi_test_slices() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Slices 20-29 (held out by make demo): raw images (1, 512, 512) and foreground masks (membrane = 1)."""
    from unetkit.data.io import read_image

    images = [read_image(ISBI / "images" / f"{i}.png").array for i in range(20, 30)]
    masks = [(read_image(ISBI / "masks" / f"{i}.png").array[0] == 0).astype(np.uint8) for i in range(20, 30)]
    return images, masks


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = float(np.logical_and(pred == 1, truth == 1).sum())
    total = float((pred == 1).sum() + (truth == 1).sum())
    return 2 * inter / total if total else 1.0


def infer_part(run: Path, *, rounds: int) -> dict:
    import torch

    from unetkit.infer.predictor import Predictor

    images, masks = isbi_test_slices()
    # No TTA, as the target is stated ("unetkit predict RUN IMAGE.png", 512 x 512, no TTA); the plan's own
    # TTA (flips: 4 views) is the last row, "default_plan_tta".
    one_pass = {"max_pass_pixels": 2**20, "tta": "none"}
    predictors: dict[str, Predictor] = {
        "default": Predictor.from_run(run, backend="auto", tta="none"),
        "previous_default": Predictor.from_run(run, backend="torch", max_pass_pixels=0, tta="none"),
        "torch_fp32": Predictor.from_run(run, backend="torch", precision="fp32", **one_pass),
        "torch_bf16": Predictor.from_run(run, backend="torch", precision="bf16", **one_pass),
        "onnxruntime_fp32": Predictor.from_run(run, backend="onnx", **one_pass),
    }
    contiguous = Predictor.from_run(run, backend="torch", precision="fp32", **one_pass)
    contiguous.model = contiguous.model.to(memory_format=torch.contiguous_format)
    contiguous.layout = None
    predictors["torch_fp32_contiguous"] = contiguous
    try:
        predictors["onnxruntime_int8"] = Predictor.from_run(run, backend="int8", **one_pass)
    except (FileNotFoundError, ValueError) as err:
        print(f"no int8 contender: {err}", flush=True)
    predictors["default_plan_tta"] = Predictor.from_run(run, backend="auto")
    scores = {name: float(np.mean([dice(p(im).labels, m) for im, m in zip(images, masks, strict=True)]))
              for name, p in predictors.items()}

    def timer(p: Predictor) -> Callable[[], float]:
        def run_all() -> float:
            started = time.perf_counter()
            for im in images:
                p(im)
            return (time.perf_counter() - started) / len(images)
        return run_all

    contenders = {name: timer(p) for name, p in predictors.items()}
    contenders["smp_unet_resnet34_eager_fp32"] = _smp_timer(images)
    times = interleaved(contenders, rounds)
    smp = statistics.median(times["smp_unet_resnet34_eager_fp32"])
    rows = {name: {"s_per_image": statistics.median(t), "images_per_s": 1 / statistics.median(t),
                   "vs_smp": smp / statistics.median(t), "test_dice": scores.get(name), "seconds": t}
            for name, t in times.items()}
    default = predictors["default"]
    return {"run": str(run), "images": "ISBI slices 20-29, 512 x 512, no TTA (but default_plan_tta: the plan's "
            f"{predictors['default_plan_tta'].infer.tta})", "rows": rows, "default": default.describe()}


def _smp_timer(images: list[np.ndarray]) -> Callable[[], float]:
    import segmentation_models_pytorch as smp
    import torch

    from unetkit.data.normalize import normalize

    model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2).eval()

    @torch.inference_mode()
    def run_all() -> float:
        started = time.perf_counter()
        for im in images:
            x = torch.from_numpy(normalize(im, mode="zscore"))[None]
            model(x).softmax(1).argmax(1)
        return (time.perf_counter() - started) / len(images)

    run_all()
    return run_all


# -- report ---------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    cpu = result["cpu"]
    lines = [f"CPU: {cpu['model']} ({cpu['kind']}); flags: {' '.join(f for f, on in cpu['flags'].items() if on)}", ""]
    if "train" in result:
        t = result["train"]
        lines += [f"Training, default plan ({t['plan']['model']}, {t['plan']['encoder']}, patch "
                  f"{t['plan']['patch_size']}, batch {t['plan']['batch_size']}), {t['steps_per_round']} steps per round:",
                  "", "| precision, layout | steps/s | vs fastest |", "|---|---|---|"]
        fastest = t["rows"][t["fastest"]]["steps_per_s"]
        for name, row in t["rows"].items():
            mark = " **(auto)**" if name == t["auto_row"] else ""
            lines.append(f"| {name}{mark} | {row['steps_per_s']:.3f} | {row['steps_per_s'] / fastest:.3f} |")
        lines += ["", t["auto"]["reason"], ""]
    if "infer" in result:
        i = result["infer"]
        lines += [f"Inference, {i['images']}; default = {i['default']}", "",
                  "| contender | s/image | images/s | x smp | test Dice |", "|---|---|---|---|---|"]
        for name, row in i["rows"].items():
            d = "" if row["test_dice"] is None else f"{row['test_dice']:.4f}"
            lines.append(f"| {name} | {row['s_per_image']:.3f} | {row['images_per_s']:.2f} | {row['vs_smp']:.2f} | {d} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-data", type=Path, help="image,mask CSV for the training part (ISBI slices 0-19)")
    parser.add_argument("--run", type=Path, help="trained run for the inference part")
    parser.add_argument("--steps", type=int, default=12, help="training steps per contender and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "precision.json")
    args = parser.parse_args()
    import torch

    from unetkit.precision import cpu_flags, cpu_kind

    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    result: dict = {"cpu": {"model": model, "kind": cpu_kind(), "flags": cpu_flags(), "threads": torch.get_num_threads()},
                    "torch": torch.__version__}
    if args.train_data:
        result["train"] = train_part(args.train_data, steps=args.steps, rounds=args.rounds)
    if args.run:
        result["infer"] = infer_part(args.run, rounds=args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
