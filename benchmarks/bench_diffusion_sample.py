"""Time DDIM sampling with the default ``diffusion_unet``: 16 images of 64x64, 50 steps, on the CPU.

The model has the registry defaults (``base_channels=32, channel_mults=[1, 2, 2, 4], num_res_blocks=2``,
attention at 1/4 and 1/8 resolution; one grey channel unless ``--channels 3``) and seeded random weights
(the cost of a forward pass does not depend on the weight values). Sampling goes through
:func:`unetkit.diffusion.sample_images`, i.e. exactly what ``unetkit diffusion sample`` runs, minus PNG writing.

Usage::

    PYTHONPATH=src python benchmarks/bench_diffusion_sample.py [--n 16] [--size 64] [--steps 50]
        [--channels 1] [--threads N] [--repeats 1]

Writes ``benchmarks/results/diffusion_sample.json`` and prints it. Wall-clock time on a shared machine depends on
what else runs, so the process CPU time and the load average before/after are recorded too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULT = ROOT / "benchmarks" / "results" / "diffusion_sample.json"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_sampling(args: argparse.Namespace) -> dict:
    import torch

    import unetkit.models.diffusion  # noqa: F401  (registers diffusion_unet)
    from unetkit.diffusion import NoiseSchedule, sample_images
    from unetkit.diffusion.samplers import Sampling
    from unetkit.models.factory import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("diffusion_unet", in_channels=args.channels)
    with torch.no_grad():  # random, non-zero output layer: a generic network
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    schedule = NoiseSchedule()
    shape = (args.n, args.channels, args.size, args.size)
    # Warm-up (one step) so one-off allocations do not count.
    sample_images(model, schedule, shape=shape, sampling=Sampling(num_steps=1), generator=torch.Generator().manual_seed(0))
    runs = []
    for r in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        images = sample_images(
            model, schedule, shape=shape, sampling=Sampling(sampler="ddim", num_steps=args.steps, eta=0.0),
            generator=torch.Generator().manual_seed(r),
        )
        runs.append({"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3)})
        assert images.shape == shape and bool(torch.isfinite(images).all())
    best = min(run["wall_s"] for run in runs)
    return {
        "model": {"name": "diffusion_unet", "kwargs": model.init_kwargs,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "runs": runs,
        "best_wall_s": best,
        "per_step_s": round(best / args.steps, 4),
        "per_image_s": round(best / args.n, 3),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    load_before = os.getloadavg()
    timing = time_sampling(args)
    result = {
        "what": f"DDIM sampling, {args.n} images of {args.size}x{args.size}x{args.channels}, {args.steps} steps, eta 0",
        "device": "cpu",
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count()},
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        **timing,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULT.with_name(RESULT.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, RESULT)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
