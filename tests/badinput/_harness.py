"""How a bad-input case runs and what every case must show (shared by the corpus test and the table script).

A case builds its files in a fresh folder, runs one command (in-process ``unetkit.cli.main``, a real
subprocess, a Python API call, or a request to the service's ASGI app), and is then held to the same rules:
the expected exit code (usage 2, runtime 1, or the HTTP status), one output line that holds every expected
substring (the file or field and the problem), no traceback, no temporary or unexpected new files, every file
that existed before unchanged, and no marker file from a hostile pickle.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO.parent / "shared" / "datasets"
# A hostile pickle writes this file (in the case's folder) if anything ever executes it.
MARKER = "PWNED"


@dataclass
class Workspace:
    """The case's own folder, plus the shared tiny run it may copy in."""

    root: Path
    template_run: Path

    def p(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def run(self, rel: str = "run") -> Path:
        """A fresh copy of the tiny run (plan.yaml + best/) at ``rel``."""
        dest = self.root / rel
        shutil.copytree(self.template_run, dest)
        return dest

    def fmt(self, text: str) -> str:
        return text.replace("{root}", str(self.root))


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it, what to run, what must come out.

    Attributes:
        id: short unique name (the test id).
        command: ``check`` ... ``serve`` (the CLI), ``serve-app`` (a request to the ASGI app) or ``api``.
        build: writes the case's files into the workspace.
        args: CLI arguments (``{root}`` is the workspace); unused for ``api`` / ``serve-app``.
        exit: expected exit status (HTTP status for ``serve-app``; 1 for an API error).
        expect: substrings that must all appear on one output line.
        call: for ``api`` / ``serve-app``: ``call(ws) -> (code, text)``.
        creates: globs (relative to the workspace) of new files the command may write (successful cases).
        subprocess: run as a real process (``python -m unetkit.cli``) instead of in-process.
        max_memory_mb: bound on memory allocated while the command runs (tracemalloc in-process, peak RSS
            for a subprocess).
        what: the problem in words (for the table).
    """

    id: str
    command: str
    what: str
    build: Callable[[Workspace], None]
    exit: int
    expect: tuple[str, ...]
    args: tuple[str, ...] = ()
    call: Callable[[Workspace], tuple[int, str]] | None = None
    creates: tuple[str, ...] = ()
    subprocess: bool = False
    max_memory_mb: float | None = None


@dataclass
class Outcome:
    code: int
    text: str
    peak_mb: float | None = None
    new_files: list[str] = field(default_factory=list)


def run_cli_inprocess(argv: list[str]) -> tuple[int, str]:
    from unetkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue() + err.getvalue()


# Runs the CLI and reports the process's peak resident memory on the last stderr line.
_DRIVER = (
    "import resource, sys\n"
    "from unetkit.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    code = e.code if isinstance(e.code, int) else 1\n"
    "sys.stdout.flush()\n"
    "print(f'peak_rss_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_cli_subprocess(argv: list[str], *, cwd: Path) -> tuple[int, str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-c", _DRIVER, *argv], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)  # fmt: skip
    lines = done.stderr.rstrip("\n").split("\n")
    peak = float(lines[-1].split("=", 1)[1]) / 1024 if lines and lines[-1].startswith("peak_rss_kb=") else None
    stderr = "\n".join(lines[:-1]) if peak is not None else done.stderr
    return done.returncode, done.stdout + stderr, peak if peak is not None else float("nan")


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def execute(case: Case, ws: Workspace) -> Outcome:
    """Build the case, run it, and return what happened (no assertions: see :func:`check`)."""
    case.build(ws)
    before = snapshot(ws.root)
    peak: float | None = None
    if case.call is not None:
        if case.max_memory_mb is not None:
            tracemalloc.start()
        try:
            code, text = case.call(ws)
        finally:
            if case.max_memory_mb is not None:
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
    elif case.subprocess:
        code, text, peak = run_cli_subprocess([ws.fmt(a) for a in case.args], cwd=ws.root)
    else:
        if case.max_memory_mb is not None:
            tracemalloc.start()
        try:
            code, text = run_cli_inprocess([ws.fmt(a) for a in case.args])
        finally:
            if case.max_memory_mb is not None:
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
    after = snapshot(ws.root)
    changed = [k for k, v in before.items() if after.get(k) != v]
    if changed:
        text += f"\n[harness] CHANGED OR REMOVED: {changed}"
    outcome = Outcome(code, text, peak, [k for k in after if k not in before])
    return outcome


def message_line(case: Case, outcome: Outcome, ws: Workspace) -> str | None:
    """The output line that holds every expected substring (None if no line does)."""
    wanted = [ws.fmt(e) for e in case.expect]
    for line in outcome.text.splitlines():
        if all(w in line for w in wanted):
            return line
    return None


def check(case: Case, outcome: Outcome, ws: Workspace) -> None:
    """Assert everything a bad-input case must show."""
    shown = outcome.text[-3000:]
    assert "Traceback" not in outcome.text, shown
    assert "[harness] CHANGED OR REMOVED" not in outcome.text, shown
    assert outcome.code == case.exit, f"exit {outcome.code}, expected {case.exit}:\n{shown}"
    assert message_line(case, outcome, ws) is not None, f"no line holds all of {case.expect}:\n{shown}"
    temporaries = [f for f in outcome.new_files if Path(f).name.startswith(".") and ".tmp" in Path(f).name]
    assert not temporaries, f"temporary files left: {temporaries}"
    unexpected = [f for f in outcome.new_files if not any(fnmatch.fnmatch(f, g) for g in case.creates)]
    assert not unexpected, f"unexpected new files: {unexpected}"
    if case.creates:
        assert outcome.new_files, f"expected new files matching {case.creates}"
    assert not any(p.name == MARKER for p in ws.root.rglob("*")), "a hostile pickle was executed"
    if case.max_memory_mb is not None:
        assert outcome.peak_mb is not None and outcome.peak_mb < case.max_memory_mb, (
            f"{outcome.peak_mb:.1f} MB allocated, bound {case.max_memory_mb} MB")
