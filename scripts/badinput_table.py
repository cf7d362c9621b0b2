"""Run the bad-input corpus (tests/badinput/_cases.py) and write a markdown table: case, command, message shown.

    PYTHONPATH=src python scripts/badinput_table.py --out /work/notes/badinput_table.md [--verbose]
    PYTHONPATH=src python scripts/badinput_table.py --docs docs/reference/bad-inputs.md

``--docs`` replaces the part of that page between the ``<!-- badinput-table:start -->`` and
``<!-- badinput-table:end -->`` lines with the regenerated table (the rest of the page is written by hand).

Each case is run and checked exactly as ``tests/badinput/test_corpus.py`` does; a case that fails its checks is
marked FAILED in the table (and, with ``--verbose``, its whole output is printed). Exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS / "badinput"), str(TESTS / "infer")]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _shown(case, outcome, ws) -> str:  # type: ignore[no-untyped-def]
    from _harness import message_line

    line = message_line(case, outcome, ws) or ""
    return line.replace(str(ws.root) + "/", "").replace(str(ws.root), ".").strip()


def _command(case, ws) -> str:  # type: ignore[no-untyped-def]
    if case.command in ("api", "serve-app"):
        return case.what
    words = [a.replace("{root}/", "").replace("{root}", ".") for a in case.args]
    return "unetkit " + " ".join(words)


def main() -> int:
    from _cases import CASES
    from _harness import Workspace, check, execute
    from _run_factory import make_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="markdown file to write (default: print)")
    parser.add_argument("--verbose", action="store_true", help="print the output of failed cases")
    parser.add_argument("--docs", default=None, help="page whose table (between the badinput-table markers) to replace")
    parser.add_argument("-k", default="", help="only cases whose id contains this")
    args = parser.parse_args()
    rows, failed = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        template = make_run(Path(tmp) / "template" / "run", tile=64, overlap=0.25)
        for i, case in enumerate(c for c in CASES if args.k in c.id):
            ws = Workspace(Path(tmp) / f"case{i}", template)
            ws.root.mkdir()
            start = time.perf_counter()
            outcome = execute(case, ws)
            seconds = time.perf_counter() - start
            try:
                check(case, outcome, ws)
                status = ""
            except AssertionError as err:
                failed += 1
                status = "FAILED: "
                if args.verbose:
                    print(f"=== {case.id} FAILED ({err.args[0].splitlines()[0] if err.args else ''})\n{outcome.text}")
            message = _shown(case, outcome, ws).replace("|", "\\|")
            code = f"HTTP {outcome.code}" if case.command == "serve-app" else str(outcome.code)
            rows.append(f"| {case.id} | `{_command(case, ws)}` | {code} | {status}{message} |")
            print(f"{case.id}: exit {outcome.code} in {seconds:.1f} s {status}", file=sys.stderr)
    table = "\n".join(["| case | command | exit | message shown |", "|---|---|---|---|", *rows]) + "\n"
    header = f"Bad-input corpus: {len(rows)} cases, {len(rows) - failed} pass (scripts/badinput_table.py)\n\n"
    if args.out:
        Path(args.out).write_text(header + table)
    if args.docs:
        replace_between_markers(Path(args.docs), header + table)
    if not args.out and not args.docs:
        print(header + table)
    return 1 if failed else 0


START, END = "<!-- badinput-table:start -->", "<!-- badinput-table:end -->"


def replace_between_markers(page: Path, text: str) -> None:
    """Put ``text`` between the START and END marker lines of ``page`` (written atomically)."""
    sys.path.insert(0, str(TESTS.parent / "src"))
    from unetkit._io import write_text_atomic

    content = page.read_text()
    if START not in content or END not in content:
        raise SystemExit(f"{page}: no {START} ... {END} markers to put the table between")
    before, rest = content.split(START, 1)
    after = rest.split(END, 1)[1]
    write_text_atomic(page, f"{before}{START}\n{text}{END}{after}")


if __name__ == "__main__":
    sys.exit(main())
