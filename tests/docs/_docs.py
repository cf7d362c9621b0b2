"""Helpers of the documentation tests: build the site, find the runnable code blocks, run a page's blocks.

A code block is *runnable* when the line just before its opening fence is ``<!-- runnable -->`` (run by the
default test run, so CI) or ``<!-- runnable slow -->`` (run with ``-m slow``: the tutorials). A page's runnable
blocks run in order, in one bash process (``set -euo pipefail``), in a fresh folder, with ``DATA`` set to the
shared datasets, so a later block sees what an earlier one wrote, as it would for a reader following the page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
DATASETS = REPO.parent / "shared" / "datasets"
BLOCK = re.compile(r"^<!-- runnable( slow)? -->\n```(\w+)[^\n]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One runnable block: its page (relative to docs/), language, code, and whether it is slow."""

    page: str
    language: str
    code: str
    slow: bool


def runnable_blocks(docs: Path = DOCS) -> list[Block]:
    """Every runnable block of every page, in page order then block order.

    Raises:
        ValueError: a marker that is not followed by a fenced block, or a block that is not bash.
    """
    blocks = []
    for path in sorted(docs.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        page = path.relative_to(docs).as_posix()
        found = list(BLOCK.finditer(text))
        if len(found) != text.count("<!-- runnable"):
            raise ValueError(f"{page}: a '<!-- runnable -->' marker is not directly followed by a fenced block")
        for m in found:
            if m.group(2) != "bash":
                raise ValueError(f"{page}: runnable blocks are bash, got {m.group(2)}")
            blocks.append(Block(page=page, language=m.group(2), code=m.group(3), slow=bool(m.group(1))))
    return blocks


def shorten_budgets(code: str, steps: int) -> str:
    """``code`` with every ``--time-budget X`` replaced by a fixed number of training steps (CI's short runs).

    A step count, not a shorter time: what a run does must not depend on how busy the machine is (with a time
    budget of 20-30 s a busy machine spent it all on reading the data and calibrating, and train stopped with
    ``time budget must be positive``).
    """
    return re.sub(r"--time-budget \S+", f"--set train.time_budget_s=null --set train.steps={steps}", code)


@dataclass
class PageRun:
    """What running one page's blocks gave."""

    returncode: int
    seconds: float
    output: str


def run_page(blocks: list[Block], *, workdir: Path, steps: int | None = None, timeout: float = 600.0) -> PageRun:
    """Run ``blocks`` (one page's) in order in ``workdir`` with the ``unetkit`` of this checkout.

    ``steps``: train this many steps instead of each training budget (None: as written).
    """
    script = ["set -euo pipefail"]
    for block in blocks:
        script.append(shorten_budgets(block.code, steps) if steps else block.code)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "DATA": str(DATASETS),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p),
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return PageRun(done.returncode, time.perf_counter() - start, done.stdout + done.stderr)


def build_site(out: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of this checkout into ``out`` (the generated parts import this checkout's src)."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
