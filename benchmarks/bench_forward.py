"""Forward-pass latency and peak memory of unetkit models beside segmentation_models_pytorch and MONAI.

Every configuration (model x input size x batch x precision) runs in its own fresh subprocess, so that the
memory high-water mark belongs to that configuration alone. In the subprocess: build the model (seeded random
weights, eval), build the input, record the RSS, reset the kernel's peak-RSS counter (``/proc/self/clear_refs``,
falling back to sampling the RSS every millisecond in a thread), run ``--warmup`` forwards and then ``--repeats``
timed forwards under ``torch.inference_mode``. Latency = median of the timed forwards; memory = peak RSS minus
the RSS before the first forward (activations, workspace and allocator caching of the forward pass).

Models (3 input channels, 2 classes; encoder weights random):
  unetkit   unet / attention_unet / unetplusplus with registry defaults (plain encoder, width 32, depth 4,
            batch norm) and with ``encoder="resnet34"``; plus the same in bf16 autocast + channels_last.
  smp       Unet / UnetPlusPlus, resnet34, encoder_weights=None (library defaults otherwise).
  monai     BasicUNet / BasicUNetPlusPlus with features (32, 64, 128, 256, 512, 32), batch norm and ReLU
            (the unetkit default widths and layers); AttentionUnet with channels (32, 64, 128, 256, 512).

Ratios ``unetkit / peer`` (< 1 means unetkit is faster / smaller) pair each unetkit model with the peer of the
same architecture and encoder; bf16 rows are also compared with the same unetkit model in fp32. Latency ratios
are given on the median and on the minimum wall time, and on the median process CPU time (all threads).

Usage::

    PYTHONPATH=src python benchmarks/bench_forward.py [--quick] [--threads 2] [--repeats 5] [--warmup 2]
        [--bf16 auto|on|off] [--only SUBSTRING] [--out benchmarks/results/forward.json]

``--quick``: 256x256 only, batch 1 and 4, 3 timed repeats after 1 warm-up; bf16 rows at batch 1 only
(``--bf16 on`` for all, ``--bf16 off`` for none). ``--only`` selects configurations by label, e.g.
``--only "512x512 b1"`` or ``--only smp/``.
The machine's load average and each configuration's process CPU time are recorded: on a shared machine, wall
time depends on what else runs. Compare numbers only from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULT = ROOT / "benchmarks" / "results" / "forward.json"
IN_CHANNELS, CLASSES = 3, 2
MONAI_FEATURES = (32, 64, 128, 256, 512, 32)

# name -> (library, builder description); the builders live in build_model().
MODELS = {
    "unetkit/unet": "unet, plain encoder (width 32, depth 4, batch norm)",
    "unetkit/attention_unet": "attention_unet, plain encoder (width 32, depth 4)",
    "unetkit/unetplusplus": "unetplusplus, plain encoder (width 32, depth 4)",
    "unetkit/unet-resnet34": "unet, encoder=resnet34",
    "unetkit/attention_unet-resnet34": "attention_unet, encoder=resnet34",
    "unetkit/unetplusplus-resnet34": "unetplusplus, encoder=resnet34",
    "smp/Unet-resnet34": "segmentation_models_pytorch.Unet('resnet34', encoder_weights=None)",
    "smp/UnetPlusPlus-resnet34": "segmentation_models_pytorch.UnetPlusPlus('resnet34', encoder_weights=None)",
    "monai/BasicUNet": f"monai BasicUNet(features={MONAI_FEATURES}, norm=batch, act=relu)",
    "monai/BasicUNetPlusPlus": f"monai BasicUNetPlusPlus(features={MONAI_FEATURES}, norm=batch, act=relu)",
    "monai/AttentionUnet": "monai AttentionUnet(channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2))",
}
# unetkit model -> peer of the same architecture (and encoder)
PEERS = {
    "unetkit/unet": "monai/BasicUNet",
    "unetkit/unetplusplus": "monai/BasicUNetPlusPlus",
    "unetkit/attention_unet": "monai/AttentionUnet",
    "unetkit/unet-resnet34": "smp/Unet-resnet34",
    "unetkit/unetplusplus-resnet34": "smp/UnetPlusPlus-resnet34",
}
BF16_ROWS = [m for m in MODELS if m.startswith("unetkit/")]


def build_model(name: str):
    """The model called ``name`` in :data:`MODELS`, eval mode, seeded random weights."""
    import torch

    torch.manual_seed(0)
    lib, arch = name.split("/", 1)
    if lib == "unetkit":
        import unetkit

        model_name, _, encoder = arch.partition("-")
        kwargs = {"encoder": encoder} if encoder else {}
        return unetkit.create_model(model_name, in_channels=IN_CHANNELS, classes=CLASSES, **kwargs).eval()
    if lib == "smp":
        import segmentation_models_pytorch as smp

        cls, encoder = arch.split("-")
        return getattr(smp, cls)(
            encoder, encoder_weights=None, in_channels=IN_CHANNELS, classes=CLASSES
        ).eval()
    from monai.networks import nets

    common = {"spatial_dims": 2, "in_channels": IN_CHANNELS, "out_channels": CLASSES}
    if arch == "AttentionUnet":
        return nets.AttentionUnet(**common, channels=MONAI_FEATURES[:5], strides=(2, 2, 2, 2)).eval()
    return getattr(nets, arch)(**common, features=MONAI_FEATURES, norm="batch", act="relu").eval()


# -- worker (one configuration, in a fresh process) ----------------------------------------------------
class PeakRSS:
    """Peak resident memory over a code region: the kernel's high-water mark, reset at the start.

    ``/proc/self/clear_refs`` with ``5`` resets ``VmHWM`` (Linux >= 4.0). Where that is not possible, a thread
    samples the RSS every millisecond (may miss very short peaks).
    """

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.method = "vmhwm"
        self.sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.method = "sampled"
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sampled = max(self.sampled, self.process.memory_info().rss)
            time.sleep(0.001)

    def peak(self) -> int:
        if self.method == "vmhwm":
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return max(int(line.split()[1]) * 1024, self.sampled)
        return self.sampled


def run_config(cfg: dict) -> dict:
    import psutil
    import torch

    torch.set_num_threads(cfg["threads"])
    model = build_model(cfg["model"])
    x = torch.randn(
        cfg["batch"], IN_CHANNELS, cfg["size"], cfg["size"], generator=torch.Generator().manual_seed(0)
    )
    bf16 = cfg["precision"] == "bf16_channels_last"
    if bf16:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    rss_before = psutil.Process().memory_info().rss
    times, cpu_times = [], []
    with PeakRSS() as peak, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(cfg["warmup"] + cfg["repeats"]):
            t0, c0 = time.perf_counter(), time.process_time()
            out = model(x)
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            if i >= cfg["warmup"]:
                times.append(elapsed)
                cpu_times.append(cpu)
    if isinstance(out, (list, tuple)):  # MONAI BasicUNetPlusPlus returns [logits] without deep supervision
        out = out[0]
    assert tuple(out.shape) == (cfg["batch"], CLASSES, cfg["size"], cfg["size"]), out.shape
    return {
        **cfg,
        "params": sum(p.numel() for p in model.parameters()),
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "times_ms": [round(1000 * t, 2) for t in times],
        # process CPU time (all threads) per forward: less sensitive than wall time to other load
        "median_cpu_ms": 1000 * statistics.median(cpu_times),
        "peak_rss_delta_mib": (peak.peak() - rss_before) / 2**20,
        "rss_before_mib": rss_before / 2**20,
        "memory_method": peak.method,
        "output_dtype": str(out.dtype),
    }


# -- driver --------------------------------------------------------------------------------------------
def configurations(args: argparse.Namespace) -> list[dict]:
    """All configurations, each unetkit model next to its peer so that load changes hit both alike."""
    sizes = [256] if args.quick else [256, 512]
    order = []
    for model, peer in PEERS.items():
        order += [model, peer, f"{model}+bf16"]
    order += [m for m in MODELS if m not in order and m.startswith("unetkit/")]
    order += [f"{m}+bf16" for m in BF16_ROWS if f"{m}+bf16" not in order]
    configs = []
    for size in sizes:
        for batch in (1, 4):
            for entry in order:
                model, _, bf16 = entry.partition("+")
                # --quick: bf16 rows at batch 1 only (without native bf16 they are the slowest rows)
                if bf16 and (args.bf16 == "off" or (args.bf16 == "auto" and args.quick and batch > 1)):
                    continue
                if args.only is not None and args.only not in f"{entry} {size}x{size} b{batch}":
                    continue
                configs.append(
                    {
                        "model": model,
                        "precision": "bf16_channels_last" if bf16 else "fp32",
                        "size": size,
                        "batch": batch,
                        "threads": args.threads,
                        "warmup": args.warmup,
                        "repeats": args.repeats,
                    }
                )
    return configs


def run_in_subprocess(cfg: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return {
            **cfg,
            "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit {proc.returncode}",
        }
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(results: list[dict]) -> list[dict]:
    by_key = {(r["model"], r["precision"], r["size"], r["batch"]): r for r in results if "error" not in r}
    rows = []
    for (model, precision, size, batch), r in sorted(by_key.items()):
        peer = PEERS.get(model)
        refs = [(peer, by_key.get((peer, "fp32", size, batch)))] if peer else []
        if precision != "fp32":
            refs.append((f"{model} fp32", by_key.get((model, "fp32", size, batch))))
        for ref_name, ref in refs:
            if ref is None:
                continue
            rows.append(
                {
                    "unetkit": model,
                    "precision": precision,
                    "vs": ref_name,
                    "size": size,
                    "batch": batch,
                    "latency_ratio": r["median_ms"] / ref["median_ms"],
                    "min_latency_ratio": r["min_ms"] / ref["min_ms"],
                    "cpu_time_ratio": r["median_cpu_ms"] / ref["median_cpu_ms"],
                    "memory_ratio": r["peak_rss_delta_mib"] / max(ref["peak_rss_delta_mib"], 1e-9),
                }
            )
    return rows


def print_table(results: list[dict], ratio_rows: list[dict]) -> None:
    head = f"{'model':32s} {'prec':4s} {'size':>4s} {'b':>2s} {'params':>7s} {'median ms':>10s} {'cpu ms':>9s} {'peak MiB':>9s}"
    print(head)
    for r in results:
        prec = "bf16" if r["precision"] != "fp32" else "fp32"
        label = f"{r['model']:32s} {prec:4s} {r['size']:4d} {r['batch']:2d}"
        if "error" in r:
            print(f"{label}  ERROR {r['error']}")
            continue
        print(
            f"{label} {r['params'] / 1e6:6.2f}M {r['median_ms']:10.1f} {r['median_cpu_ms']:9.1f} "
            f"{r['peak_rss_delta_mib']:9.1f}"
        )
    print("\nratios unetkit / reference (< 1: unetkit faster or smaller)")
    print(
        f"{'unetkit':32s} {'prec':4s} {'vs':36s} {'size':>4s} {'b':>2s} {'median':>6s} {'min':>6s} {'cpu':>6s} {'mem':>6s}"
    )
    for q in ratio_rows:
        prec = "bf16" if q["precision"] != "fp32" else "fp32"
        print(
            f"{q['unetkit']:32s} {prec:4s} {q['vs']:36s} {q['size']:4d} {q['batch']:2d} {q['latency_ratio']:6.2f} "
            f"{q['min_latency_ratio']:6.2f} {q['cpu_time_ratio']:6.2f} {q['memory_ratio']:6.2f}"
        )


def meta(args: argparse.Namespace) -> dict:
    import monai
    import segmentation_models_pytorch as smp
    import torch

    import unetkit
    from unetkit.precision import cpu_supports_bf16

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_native_bf16": cpu_supports_bf16(),
        "torch": torch.__version__,
        "unetkit": unetkit.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "monai": monai.__version__,
        "models": MODELS,
        "loadavg_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="256x256 only, 3 repeats after 1 warm-up, bf16 at batch 1"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads per configuration")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards (default 5; quick 3)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed forwards first (default 2; quick 1)"
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 + channels_last rows for unetkit: auto = all (with --quick: batch 1 only)",
    )
    parser.add_argument("--only", default=None, help="run configurations whose label contains this")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_config(json.loads(args.worker))))
        return 0
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    payload = {"meta": meta(args), "results": []}
    for i, cfg in enumerate(configurations(args)):
        result = run_in_subprocess(cfg)
        payload["results"].append(result)
        status = (
            result.get("error") or f"{result['median_ms']:.1f} ms, {result['peak_rss_delta_mib']:.0f} MiB"
        )
        print(
            f"[{i + 1}] {cfg['model']} {cfg['precision']} {cfg['size']} b{cfg['batch']}: {status}", flush=True
        )
        write_json(args.out, payload)  # partial results survive an interrupted run
    payload["meta"]["loadavg_end"] = os.getloadavg()
    payload["ratios"] = ratios(payload["results"])
    write_json(args.out, payload)
    print_table(payload["results"], payload["ratios"])
    return 1 if any("error" in r for r in payload["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
