"""``unetkit diffusion train|sample``: train a diffusion U-Net on a folder of images, or sample from one."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from unetkit.config import parse_duration

DEFAULT_TIME_BUDGET = "5m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="diffusion_command", required=True, metavar="ACTION")
    _add_train_arguments(sub.add_parser("train", help="Train a denoiser on a folder of images."))
    _add_sample_arguments(sub.add_parser("sample", help="Generate images from a trained run."))


def run(args: argparse.Namespace) -> int:
    if args.diffusion_command == "train":
        return run_train(args)
    return run_sample(args)


# -- train ------------------------------------------------------------------------------------------
def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, metavar="DATA", help="folder of PNG/JPEG/TIFF images (searched recursively)")
    p.add_argument("--out", type=Path, required=True, metavar="RUN", help="run folder to write")
    p.add_argument("--image-size", type=int, default=64, help="side of the square random crops (default 64)")
    p.add_argument("--time-budget", default=None, help=f"e.g. 90s, 5m, 1h (default {DEFAULT_TIME_BUDGET} if no --steps)")
    p.add_argument("--steps", type=int, default=None, help="maximum training steps")
    p.add_argument("--batch-size", type=int, default=16, help="images per training step")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the batches")
    p.add_argument("--class-conditional", action="store_true", help="condition on each image's folder name")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="force grey (1) or RGB (3)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable / non-image files instead of failing")
    p.add_argument("--base-channels", type=int, default=32, help="channels of the first level")
    p.add_argument("--channel-mults", default="1,2,2,4", help="per-level channel multipliers (default 1,2,2,4)")
    p.add_argument("--num-res-blocks", type=int, default=2, help="residual blocks per level")
    p.add_argument("--beta-schedule", choices=("linear", "squaredcos_cap_v2"), default="linear",
                   help="noise schedule")
    p.add_argument("--prediction-type", choices=("epsilon", "sample", "v_prediction"), default="epsilon",
                   help="what the network predicts: the noise, the clean image or v")
    p.add_argument("--num-train-timesteps", type=int, default=1000, help="diffusion steps of the schedule")
    p.add_argument("--ema-decay", type=float, default=0.999, help="decay of the weights' moving average")
    p.add_argument("--no-flip", action="store_true", help="no random left-right flips")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N]")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in RUN")


def run_train(args: argparse.Namespace) -> int:
    from unetkit.diffusion.build import build_model, resolve_device
    from unetkit.diffusion.checkpoint import CONFIG_NAME, save_run, write_text_atomic
    from unetkit.diffusion.data import load_image_folder
    from unetkit.diffusion.progress import ProgressReporter
    from unetkit.diffusion.schedule import NoiseSchedule, ScheduleConfig
    from unetkit.diffusion.train import train_diffusion

    if (args.out / CONFIG_NAME).exists() and not args.overwrite:
        raise ValueError(f"{args.out} already holds a run; pass --overwrite to replace it")
    config = _train_config(args)
    schedule = ScheduleConfig(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
    )
    data = load_image_folder(
        args.data,
        image_size=args.image_size,
        channels=args.channels,
        class_conditional=args.class_conditional,
        skip_bad=args.skip_bad,
    )
    for path, why in data.skipped:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    model_kwargs = {
        "in_channels": data.channels,
        "base_channels": args.base_channels,
        "channel_mults": parse_int_list(args.channel_mults, "--channel-mults"),
        "num_res_blocks": args.num_res_blocks,
        "num_classes": len(data.class_names) if args.class_conditional else None,
    }
    model = build_model(model_kwargs, seed=args.seed, image_size=args.image_size).to(resolve_device(args.device))
    classes = f", classes: {', '.join(data.class_names)}" if data.class_names else ""
    print(f"training on {len(data)} image(s), {data.channels} channel(s){classes}; {_limits(config)}")
    with ProgressReporter(total=config.steps, unit="step", every=50) as reporter:
        result = train_diffusion(model, NoiseSchedule(schedule), data, config, progress=reporter.update)
    if not result.losses:
        raise RuntimeError("training stopped before the first step; nothing to save")
    extra = _train_summary(config, result, args)
    save_run(args.out, model=result.ema_model, schedule=schedule, image_size=args.image_size,
             channels=data.channels, class_names=data.class_names, extra=extra)
    lines = "".join(f"{i},{v:.6f}\n" for i, v in enumerate(result.losses, 1))
    write_text_atomic(args.out / "loss.csv", "step,loss\n" + lines)
    stopped = " (interrupted)" if result.interrupted else ""
    print(f"{len(result.losses)} steps in {result.seconds:.0f} s{stopped}, final loss "
          f"{extra['final_loss']:.4f}; saved EMA weights to {args.out}")
    return 0


def _train_config(args: argparse.Namespace) -> Any:
    from unetkit.diffusion.train import DiffusionTrainConfig

    budget = args.time_budget or (DEFAULT_TIME_BUDGET if args.steps is None else None)
    return DiffusionTrainConfig(
        image_size=args.image_size,
        steps=args.steps,
        time_budget_s=None if budget is None else parse_duration(budget),
        batch_size=args.batch_size,
        lr=args.lr,
        ema_decay=args.ema_decay,
        flip=not args.no_flip,
        seed=args.seed,
    )


def _train_summary(config: Any, result: Any, args: argparse.Namespace) -> dict[str, Any]:
    tail = result.losses[-max(1, len(result.losses) // 10) :]
    return {
        "steps": len(result.losses),
        "seconds": round(result.seconds, 2),
        "interrupted": result.interrupted,
        "final_loss": sum(tail) / len(tail),
        "train": {k: v for k, v in vars(config).items()},
        "data": str(args.data),
    }


def _limits(config: Any) -> str:
    parts = []
    if config.steps is not None:
        parts.append(f"up to {config.steps} steps")
    if config.time_budget_s is not None:
        parts.append(f"time budget {config.time_budget_s:.0f} s")
    return " / ".join(parts)


# -- sample -----------------------------------------------------------------------------------------
def _add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN", help="run folder written by `unetkit diffusion train`")
    p.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise weight: 0 deterministic, 1 DDPM-like")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="sampling algorithm")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument("--class-label", default=None, help="class name or index (class-conditional runs; default: cycle)")
    p.add_argument("--image-size", type=int, default=None, help="output size (default: the training crop size)")
    p.add_argument("--batch-size", type=int, default=None, help="images per network call (default: all)")
    p.add_argument("--out", type=Path, default=Path("grid.png"), help="grid PNG; single images go next to it")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu or cuda[:N]")


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from unetkit.diffusion.build import class_labels_for, resolve_device
    from unetkit.diffusion.checkpoint import load_run
    from unetkit.diffusion.output import save_samples
    from unetkit.diffusion.progress import ProgressReporter
    from unetkit.diffusion.samplers import Sampling, sample_images
    from unetkit.diffusion.schedule import NoiseSchedule

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {args.out}")
    loaded = load_run(args.run_dir, device=resolve_device(args.device))
    labels = class_labels_for(args.class_label, loaded.class_names, args.n)
    size = args.image_size or loaded.image_size
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    with ProgressReporter(total=args.steps, unit="step", every=10) as reporter:
        images = sample_images(
            loaded.model,
            NoiseSchedule(loaded.schedule),
            shape=(args.n, loaded.channels, size, size),
            sampling=Sampling(sampler=args.sampler, num_steps=args.steps, eta=args.eta),
            generator=generator,
            class_labels=labels,
            batch_size=args.batch_size,
            progress=lambda done, total: reporter.update(done, None),
        )
    written = save_samples(images, args.out)
    print(f"{args.n} image(s) in {time.perf_counter() - start:.1f} s: grid {written[0]}, singles "
          f"{written[1].name} .. {written[-1].name}")
    return 0


# -- shared helpers ----------------------------------------------------------------------------------
def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"{flag} must be comma-separated integers like 1,2,2,4, got {text!r}")
    return values


