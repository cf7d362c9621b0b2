"""Do two common claims hold on the shared datasets? ``unetkit compare`` on each, then one markdown table.

    python benchmarks/compare_claims.py --datasets isbi,drive,dubai,magnetic,kvasir,hippocampus \\
        --budget 10m --tta none,flips,d4 --work /tmp/compare_claims --out benchmarks/results/compare_claims.md
    python benchmarks/compare_claims.py --steps 300 ...   # a fixed step count: the same models on a busy machine

Claims tested:
  1. "U-Net++ and Attention U-Net improve boundary accuracy by 5-15 %": the relative change of boundary F1
     (and of HD95, where lower is better) of each variant against U-Net, at TTA ``none``.
  2. "Test-time augmentation improves segmentation consistency by 8-12 %": the relative change of shift
     consistency of each TTA level against ``none``, per model (Dice shown beside it).

A claim "holds" on a row when the change is significant (95 % paired-bootstrap interval excludes 0, at least
five held-out images) and its relative size lies in the claimed range. The claims are about trained models: a row
whose reference (U-Net for claim 1, the same model without TTA for claim 2) has a mean Dice below
``MIN_REFERENCE_DICE`` gets no verdict, since the budget did not train it. Every variant trains for ``--budget``
on the same split (the default plan, the runs' validation split held out). The 2D datasets use the accuracy
benchmark's training lists (``acc_data``; its test images are never seen here); hippocampus is the whole MSD
Task04 folder (3D; every variant has a 3D form with the plain encoder the planner picks for volumes).

Resumable: ``compare`` skips finished variants, and a dataset whose ``report.json`` was written with the same
models, TTA levels and budget is not run again (its report is reused for the table).

On a loaded CPU pass ``-- --set train.align=false``: with the end-of-run alignment on, a validation slower than
the whole budget makes the trainer's budget re-estimate negative (``unetkit.train.loop``; not fixed here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from acc_data import DEFAULT_ROOT, SPECS, prepare_splits

from unetkit.config import parse_duration
from unetkit.metrics_boundary import MIN_IMAGES_FOR_VERDICT

HERE = Path(__file__).resolve().parent
DATASETS = ("isbi", "drive", "dubai", "magnetic", "kvasir", "hippocampus")
BOUNDARY_RANGE = (0.05, 0.15)
CONSISTENCY_RANGE = (0.08, 0.12)
# Below this mean Dice the reference model has not learnt the task at the budget: no verdict on its rows.
MIN_REFERENCE_DICE = 0.5


def dataset_args(name: str, root: Path, work: Path) -> list[str]:
    """``DATA`` and the data options of one dataset (how its masks are encoded; nothing else)."""
    if name in SPECS:
        train_csv, _ = prepare_splits(spec=SPECS[name], root=root, work=work / "lists")
        folder = train_csv.parent
        options = {
            # membrane (0) is the foreground class 1; a quarter of the 20 slices held out gives the 5 images a
            # verdict needs (the default fifth gives 4)
            "isbi": ["--value-map", "0:1,255:0", "--set", "train.val_fraction=0.25"],
            # the FOV is the list's roi column; 20 training images: a quarter held out, as for ISBI
            "drive": ["--mask-threshold", "128", "--set", "train.val_fraction=0.25"],
            "dubai": ["--colour-table", str(folder / "colour_table.json"), "--ignore-colour", "9B9B9B",
                      "--ignore-colour", "000000"],
            # ~1075 training tiles: 5 % held out (~54) keeps scoring 3 variants x 3 TTA levels x 3 shifts
            # within about half an hour on 2 CPU cores (the default fifth would be ~215 images)
            "magnetic": ["--mask-threshold", "128", "--set", "train.val_fraction=0.05"],
        }[name]  # fmt: skip
        return [str(train_csv), *options]
    if name == "kvasir":
        # 1000 frames: 2 % held out (20, as many as magnetic's 5 %): scoring 3 variants x 3 TTA levels x 3 shifts
        # of 50 frames would take about 45 minutes on 2 CPU cores
        return [str(root / "kvasir_seg_polyps"), "--mask-threshold", "128", "--set", "train.val_fraction=0.02"]
    if name == "hippocampus":
        return [str(root / "msd_task04_hippocampus")]
    raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def run_dataset(name: str, args: argparse.Namespace) -> tuple[dict, float]:
    """The dataset's compare report (cached when its options match) and the seconds this call spent."""
    out = args.work / name
    length = ["--steps", str(args.steps)] if args.steps else ["--time-budget", args.budget]
    cli = [sys.executable, "-m", "unetkit.cli", "compare", *dataset_args(name, args.root, args.work), "--out",
           str(out), "--models", args.models, "--tta", args.tta, *length, *args.extra]  # fmt: skip
    cached = out / "report.json"
    if cached.is_file():
        report = json.loads(cached.read_text())
        opts = report["options"]
        same_length = (opts.get("steps", 0) == args.steps and
                       (args.steps or opts["time_budget_s"] == parse_duration(args.budget)))
        if ",".join(opts["models"]) == args.models and ",".join(opts["tta"]) == args.tta and same_length:
            print(f"{name}: cached report {cached}", flush=True)
            return report, 0.0
    started = time.perf_counter()
    print(f"{name}: {' '.join(cli)}", flush=True)
    subprocess.run(cli, check=True)
    return json.loads(cached.read_text()), time.perf_counter() - started


def verdict(diff: dict, claimed: tuple[float, float], *, lower_is_better: bool = False,
            reference_dice: float | None = None) -> str:
    """Whether one difference supports a claimed relative improvement range.

    ``reference_dice``: the mean Dice of the model the difference is taken against; below
    ``MIN_REFERENCE_DICE`` the row gets no verdict (None: not checked).
    """
    rel = diff["relative"]
    if rel is None:
        return "n/a (reference is 0)"
    gain = -rel if lower_is_better else rel
    if diff.get("images", MIN_IMAGES_FOR_VERDICT) < MIN_IMAGES_FOR_VERDICT:
        return f"no verdict (only {diff['images']} images)"
    if reference_dice is not None and reference_dice < MIN_REFERENCE_DICE:
        return f"no verdict (reference Dice {reference_dice:.2f}: not trained at this budget)"
    if not diff["significant"]:
        return "no (not significant)"
    if gain <= 0:
        return "no (worse)"
    return "yes" if claimed[0] <= gain <= claimed[1] else f"no ({gain:+.1%}, outside the range)"


def _mean_dice(report: dict, model: str, level: str) -> float | None:
    dice = report["summary"].get(model, {}).get(level, {}).get("dice")
    return float(dice["mean"]) if dice else None


def _pick(diffs: list[dict], **match: str) -> dict | None:
    return next((d for d in diffs if all(d.get(k) == v for k, v in match.items())), None)


def _fmt(d: dict | None) -> str:
    if d is None:
        return "-"
    rel = f" ({d['relative']:+.1%})" if d["relative"] is not None else ""
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{rel}"


BOUNDARY_COLUMNS = ["dataset", "variant", "boundary F1", "HD95", "Dice", "5-15 % on boundary F1?", "on HD95?"]
TTA_COLUMNS = ["dataset", "model", "TTA", "shift consistency", "view agreement (mean)", "Dice", "8-12 %?"]


def boundary_rows(reports: dict[str, dict]) -> list[list[str]]:
    """Claim 1, one row per dataset and variant (against the first model, at the first TTA level)."""
    rows = []
    for name, report in reports.items():
        first_model, first_level = report["options"]["models"][0], report["options"]["tta"][0]
        ref = _mean_dice(report, first_model, first_level)
        diffs = [d for d in report["differences"]["vs_first_model"] if d["tta"] == first_level]
        for model in report["options"]["models"][1:]:
            bf1, hd = _pick(diffs, model=model, metric="boundary_f1"), _pick(diffs, model=model, metric="hd95")
            dice = _pick(diffs, model=model, metric="dice")
            rows.append([name, model, _fmt(bf1), _fmt(hd), _fmt(dice),
                         verdict(bf1, BOUNDARY_RANGE, reference_dice=ref) if bf1 else "-",
                         verdict(hd, BOUNDARY_RANGE, lower_is_better=True, reference_dice=ref) if hd else "-"])  # fmt: skip
    return rows


def tta_rows(reports: dict[str, dict]) -> list[list[str]]:
    """Claim 2, one row per dataset, model and TTA level (against the first level)."""
    rows = []
    for name, report in reports.items():
        diffs, first_level = report["differences"]["vs_first_tta"], report["options"]["tta"][0]
        for model in report["options"]["models"]:
            ref = _mean_dice(report, model, first_level)
            for level in report["options"]["tta"][1:]:
                shift = _pick(diffs, model=model, tta=level, metric="shift_consistency")
                dice = _pick(diffs, model=model, tta=level, metric="dice")
                agreement = report["summary"][model][level].get("view_agreement")
                rows.append([name, model, level, _fmt(shift), f"{agreement['mean']:.3f}" if agreement else "-",
                             _fmt(dice), verdict(shift, CONSISTENCY_RANGE, reference_dice=ref) if shift else "-"])  # fmt: skip
    return rows


def claim_tables(reports: dict[str, dict]) -> list[str]:
    """Markdown of both claims: :func:`boundary_rows` and :func:`tta_rows` under their headings."""

    def table(columns: list[str], rows: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *("| " + " | ".join(r) + " |" for r in rows)]

    return ["## Claim 1: U-Net++ / Attention U-Net improve boundary accuracy by 5-15 % (vs U-Net, TTA none)", "",
            *table(BOUNDARY_COLUMNS, boundary_rows(reports)), "",
            "## Claim 2: TTA improves consistency by 8-12 % (shift consistency vs TTA none)", "",
            *table(TTA_COLUMNS, tta_rows(reports))]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help=f"comma list of {','.join(DATASETS)}")
    p.add_argument("--models", default="unet,unetplusplus,attention_unet", help="first = the reference")
    p.add_argument("--tta", default="none,flips,d4", help="first = the reference")
    p.add_argument("--budget", default="10m", help="training time per variant, e.g. 2m, 10m")
    p.add_argument("--steps", type=int, default=0,
                   help="train each variant a fixed number of steps instead of --budget (load-independent models)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="shared datasets folder")
    p.add_argument("--work", type=Path, default=Path("/tmp/compare_claims"), help="studies and their reports")
    p.add_argument("--out", type=Path, default=HERE / "results" / "compare_claims.md",
                   help="the markdown table (and beside it the same figures as .json, with the CPU flags)")
    p.add_argument("--summary", type=Path, default=None,
                   help="also write the docs' benchmark summaries here (a folder such as docs/benchmarks/data): "
                        "compare_claims_boundary_<kind>.json and compare_claims_tta_<kind>.json")
    p.add_argument("--machine", default=None,
                   help="the machine's heading on the benchmarks page (default: '<N>-core CPU, <CPU kind>')")
    p.add_argument("extra", nargs="*", help="after --: more `unetkit compare` options (e.g. --device cuda)")
    args = p.parse_args()
    reports, seconds = {}, {}
    for name in [n.strip() for n in args.datasets.split(",") if n.strip()]:
        reports[name], seconds[name] = run_dataset(name, args)
    header = [f"# unetkit compare on {len(reports)} dataset(s): do the claims hold?", "",
              f"Training per variant: {f'{args.steps} steps' if args.steps else args.budget}; models {args.models}; TTA {args.tta}. "
              "Differences: mean [95 % paired-bootstrap interval] (relative to the reference's mean).", "",
              "| dataset | held out | wall time of this call |", "|---|---|---|"]  # fmt: skip
    header += [f"| {n} | {r['held_out']} | {seconds[n]:.0f} s{' (cached)' if not seconds[n] else ''} |"
               for n, r in reports.items()]  # fmt: skip
    text = "\n".join([*header, "", *claim_tables(reports)]) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(claims_json(reports, seconds, args), indent=2) + "\n")
    if args.summary:
        write_summaries(args.summary, reports, args)
    print(text)


def claims_json(reports: dict[str, dict], seconds: dict[str, float], args: argparse.Namespace) -> dict:
    """The machine (CPU flags: never compare across machines), the options, and each dataset's differences."""
    from unetkit.precision import cpu_flags, cpu_kind

    return {
        "machine": {"cpus": os.cpu_count(), "cpu_kind": cpu_kind(), "cpu_flags": cpu_flags(),
                    "python": platform.python_version(), "torch": torch_version()},
        "training": {"steps": args.steps} if args.steps else {"budget": args.budget},
        "models": args.models.split(","), "tta": args.tta.split(","),
        "datasets": {name: {"held_out": r["held_out"], "seconds": seconds[name], "options": r["options"],
                            "differences": r["differences"],
                            "summary": {m: {lvl: {k: v for k, v in s.items() if k in SUMMARY_KEYS}
                                            for lvl, s in levels.items()} for m, levels in r["summary"].items()}}
                     for name, r in reports.items()},
    }  # fmt: skip


def write_summaries(folder: Path, reports: dict[str, dict], args: argparse.Namespace) -> list[Path]:
    """The two claims as benchmark summaries for the docs' benchmarks page (its schema: title, machine, date,
    setup, command, columns, rows, notes, source), one file per claim, named by the CPU kind."""
    import datetime

    from unetkit.precision import cpu_flags, cpu_kind

    kind = cpu_kind()
    machine = {"kind": args.machine or f"{os.cpu_count()}-core CPU, {kind}",
               "flags": sorted(f for f, on in cpu_flags().items() if on)}
    length = f"{args.steps} steps" if args.steps else args.budget
    held = "; ".join(f"{n}: {r['held_out']}" for n, r in reports.items())
    common = {"machine": machine, "date": datetime.date.today().isoformat(),
              "setup": f"`unetkit compare` per dataset, every variant trained {length} on the same split, scored on "
                       f"its held-out part ({held}). Change: mean [95 % paired-bootstrap interval] (relative).",
              "command": "python benchmarks/compare_claims.py " + " ".join(
                  [f"--datasets {','.join(reports)}", f"--steps {args.steps}" if args.steps else f"--budget {args.budget}",
                   f"--models {args.models}", f"--tta {args.tta}", "--summary docs/benchmarks/data",
                   f"--machine '{machine['kind']}'"]),
              "source": "written by the command from the `unetkit compare` reports"}  # fmt: skip
    boundary = {**common, "title": "Claim: U-Net++ / Attention U-Net improve boundary accuracy by 5-15 % (vs U-Net, TTA none)",
                "columns": BOUNDARY_COLUMNS, "rows": boundary_rows(reports)}
    tta = {**common, "title": "Claim: TTA improves consistency by 8-12 % (shift consistency vs TTA none)",
           "columns": TTA_COLUMNS, "rows": tta_rows(reports)}
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, summary in (("boundary", boundary), ("tta", tta)):
        path = folder / f"compare_claims_{name}_{kind.replace('x86-', '')}.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        written.append(path)
    return written


SUMMARY_KEYS = ("dice", "boundary_f1", "hd95", "nsd", "shift_consistency", "view_agreement", "seconds_per_image")


def torch_version() -> str:
    import torch

    return str(torch.__version__)


if __name__ == "__main__":
    main()
