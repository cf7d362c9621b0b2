"""Environment record and markdown table of the accuracy benchmark."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from pathlib import Path

METHOD_TEXT = {
    "unetkit": "unetkit defaults",
    "unetkit-scratch": "unetkit from scratch (--encoder plain)",
    "smp": "smp Unet-ResNet34 (peer recipe)",
    "monai": "MONAI BasicUNet (peer recipe)",
    "unetkit-lite0": "unetkit + pretrained EfficientNet-Lite0",
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def collect_environment(args: argparse.Namespace) -> dict:
    """What a reader needs to compare numbers across machines (all methods ran on the CPU, fp32 peers)."""
    import torch

    return {
        "benchmark": "accuracy",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "git_commit": git_commit(Path(__file__).resolve().parents[1]),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "budget_minutes": args.budget,
        "threads_requested": args.threads,
        "torch_threads": args.threads or torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "device": "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": args.seed,
    }


def _cell(result: dict | None) -> str:
    if result is None:
        return "–"
    if "error" in result:
        return "failed"
    steps = result.get("steps")
    return f"{result['score']:.4f}" + (f" ({steps} steps)" if steps is not None else "")


def render_markdown(report: dict) -> str:
    datasets = report.get("datasets", {})
    methods = [m for m in METHOD_TEXT if any(m in d["methods"] for d in datasets.values())]
    lines = [
        "# Accuracy benchmark",
        "",
        f"Every method trains for the same wall-clock budget, **{report['budget_minutes']:g} min** from its first "
        f"training step, in its own process, one after another, on {report['cpu']} ({report['cpu_count']} "
        f"logical CPUs, {report['torch_threads']} torch threads), torch {report['torch']}; then it predicts each "
        "test image whole and one shared scorer reads the class-index PNGs.",
        f"Run {report['date']} at commit `{report['git_commit']}`: `{report['command']}`.",
        "",
        "| dataset | metric | " + " | ".join(METHOD_TEXT[m] for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for name, entry in datasets.items():
        metric = "mean IoU" if entry["metric"] == "miou" else "Dice"
        cells = [_cell(entry["methods"].get(m)) for m in methods]
        lines.append(f"| {name} | {metric} | " + " | ".join(cells) + " |")
    lines += ["", "Scores (higher is better):", ""]
    lines += [f"- **{n}** ({e['n_train']} train / {e['n_test']} test): {e['metric_text']}." for n, e in datasets.items()]
    lines += _per_class(datasets, methods) + _failures(datasets)
    lines += ["", "Peer recipe (both peers): random 256x256 crops, flips/rot90, per-image per-channel "
              "standardisation, batch 4, AdamW lr 1e-3 with time-based cosine decay, cross-entropy + soft Dice, "
              "fp32, random init; whole-image inference padded to a multiple of 32. unetkit: `unetkit train` "
              "defaults with only the mask-encoding options of each dataset.", ""]
    return "\n".join(lines)


def _per_class(datasets: dict, methods: list[str]) -> list[str]:
    lines: list[str] = []
    for name, entry in datasets.items():
        if entry["metric"] != "miou":
            continue
        classes = entry["classes"]
        lines += ["", f"Per-class IoU, {name}:", "", "| method | " + " | ".join(classes) + " |",
                  "|---|" + "---|" * len(classes)]
        for m in methods:
            per = entry["methods"].get(m, {}).get("per_class")
            if per:
                lines.append(f"| {METHOD_TEXT[m]} | " + " | ".join(f"{per[c]:.3f}" for c in classes) + " |")
    return lines


def _failures(datasets: dict) -> list[str]:
    failed = [(n, m, r["error"]) for n, e in datasets.items() for m, r in e["methods"].items() if "error" in r]
    if not failed:
        return []
    return ["", "Failed runs:", ""] + [f"- {n} / {m}: {err.splitlines()[0]}" for n, m, err in failed]


def write_markdown(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_markdown(report))
    os.replace(tmp, path)
