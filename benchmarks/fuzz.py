"""Long fuzzing runs over the targets of tests/fuzz/_targets.py (readers on mutated real files, mask decoding,
plan / model-config loading, the service's request handling) and tests/fuzz/_handed.py (handed-over files:
plans written to expand, ONNX graphs, checkpoint config.json / state.json); writes JSON.

    PYTHONPATH=src python benchmarks/fuzz.py --minutes 20 [--target onnx] [--out fuzz.json]

The minutes are shared equally by the chosen targets (all seven by default), which run one after another in rounds
of fresh, randomised hypothesis runs (no example database). Only the errors each target documents may escape it
(ValueError, OSError; the ONNX and checkpoint targets also the RuntimeError / KeyError that the CLI prints as one
line); anything else is a failure: its shrunk example and error are recorded and the run goes on. The examples run
per target (per loader) are printed and written.
``--quick`` is a smoke run (about 40 s in all). The JSON has the examples run per target, the failures found, the
seconds spent, and the CPU flags (unetkit.precision.cpu_flags).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def fuzz_target(name: str, seconds: float, *, round_examples: int = 200) -> dict:
    """Run target ``name`` for about ``seconds``; returns examples run, rounds, failures (deduplicated)."""
    import warnings

    from _targets import TARGETS
    from hypothesis import HealthCheck, given, settings

    target = TARGETS[name]
    counter = {"examples": 0}
    folder = Path(tempfile.mkdtemp(prefix=f"unetkit-fuzz-{name}-"))

    def body(example) -> None:  # type: ignore[no-untyped-def]
        counter["examples"] += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # library warnings are not failures here; exceptions are
            if name == "readers":
                target.run(*example, folder)
            else:
                target.run(example, folder)

    test = settings(max_examples=round_examples, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))(given(example=target.strategy)(body))  # fmt: skip
    failures: dict[str, dict] = {}
    rounds = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        rounds += 1
        try:
            test()
        except Exception as err:  # noqa: BLE001 - a failure found: record it, keep fuzzing
            last = traceback.extract_tb(err.__traceback__)[-1]
            key = f"{type(err).__name__} at {Path(last.filename).name}:{last.lineno}"
            entry = failures.setdefault(key, {"error": f"{type(err).__name__}: {str(err)[:500]}", "count": 0,
                                              "where": f"{last.filename}:{last.lineno}",
                                              "notes": [str(n)[:500] for n in getattr(err, "__notes__", [])]})
            entry["count"] += 1
    return {"examples": counter["examples"], "rounds": rounds, "seconds": round(time.perf_counter() - start, 1),
            "failures": list(failures.values())}


def main() -> int:
    from _targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="total fuzzing time, shared by the targets")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), default=None,
                        help="fuzz only this target (repeatable; default: all)")
    parser.add_argument("--out", default="fuzz.json", help="JSON report")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 s per target")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    import logging

    logging.disable(logging.CRITICAL)  # nibabel / tifffile / multipart log every broken header they fix up
    names = args.target or sorted(TARGETS)
    per_target = 10.0 if args.quick else args.minutes * 60 / len(names)
    from unetkit.precision import cpu_flags

    report: dict = {"minutes": args.minutes if not args.quick else len(names) * per_target / 60, "targets": {},
                    "cpu_flags": cpu_flags(), "machine": platform.machine(), "python": platform.python_version(),
                    "threads": os.environ.get("OMP_NUM_THREADS")}
    for name in names:
        result = fuzz_target(name, per_target)
        report["targets"][name] = result
        print(f"{name}: {result['examples']} examples in {result['seconds']} s, "
              f"{len(result['failures'])} distinct failure(s)", flush=True)
        for failure in result["failures"]:
            print(f"  {failure['count']}x {failure['error'][:200]} ({failure['where']})", flush=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    total = sum(len(r["failures"]) for r in report["targets"].values())
    print(f"{sum(r['examples'] for r in report['targets'].values())} examples, {total} distinct failure(s); "
          f"report in {args.out}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
