"""Every code block marked runnable in the docs runs, on the real shared data, as a reader would run it.

``<!-- runnable -->`` blocks run here with each training budget replaced by 10 training steps (the getting-started
path: a step count, so the run is the same on a busy machine; estimated 1-1.5 minutes on an idle 2-core CPU,
not measured: the machine this was written on was saturated, 25 s per step);
``<!-- runnable slow -->`` blocks (the tutorials) run with ``-m slow``, with budgets
as written. A page's blocks share one folder and one shell, in order.
"""

from __future__ import annotations

import os
from itertools import groupby
from pathlib import Path

import pytest
from _docs import DATASETS, Block, run_page, runnable_blocks, shorten_budgets

BLOCKS = runnable_blocks()
CI_STEPS = 10


def _pages(slow: bool) -> list[tuple[str, list[Block]]]:
    chosen = [b for b in BLOCKS if b.slow == slow]
    return [(page, list(blocks)) for page, blocks in groupby(chosen, key=lambda b: b.page)]


def _run(page: str, blocks: list[Block], workdir: Path, *, steps: int | None) -> None:
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS}")
    # a tutorial trains for up to 10 wall-clock minutes, and on a busy machine its evaluation and prediction
    # took as long again (the 600 s default killed every 10-minute page)
    done = run_page(blocks, workdir=workdir, steps=steps, timeout=600.0 if steps else 3600.0)
    assert done.returncode == 0, f"{page}: a runnable block failed after {done.seconds:.0f} s:\n{done.output[-4000:]}"
    if os.environ.get("UNETKIT_DOCS_TIMES"):  # the wall time a page's commands took, for its note
        with open(os.environ["UNETKIT_DOCS_TIMES"], "a", encoding="utf-8") as f:
            f.write(f"{page}\t{done.seconds:.0f}\n")


def test_there_are_runnable_blocks_of_both_kinds() -> None:
    assert {b.page for b in BLOCKS if not b.slow} >= {"getting-started/first-run.md"}
    assert {b.page for b in BLOCKS if b.slow} >= {"tutorials/em-membranes.md", "tutorials/deployment.md"}


def test_budgets_are_shortened_for_ci() -> None:
    code = "unetkit train a --time-budget 5m --out r\nunetkit plan a --time-budget 10m"
    fixed = "--set train.time_budget_s=null --set train.steps=20"
    assert shorten_budgets(code, 20) == f"unetkit train a {fixed} --out r\nunetkit plan a {fixed}"


def test_a_failing_block_fails_the_page(tmp_path: Path) -> None:
    blocks = [Block("p.md", "bash", "echo one\n", False), Block("p.md", "bash", "unetkit check missing-folder\n", False),
              Block("p.md", "bash", "touch never\n", False)]
    done = run_page(blocks, workdir=tmp_path)
    assert done.returncode == 1 and "missing-folder" in done.output
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(("page", "blocks"), _pages(slow=False), ids=[p for p, _ in _pages(slow=False)])
def test_page_runs(page: str, blocks: list[Block], tmp_path: Path) -> None:
    _run(page, blocks, tmp_path, steps=CI_STEPS)


@pytest.mark.slow
@pytest.mark.parametrize(("page", "blocks"), _pages(slow=True), ids=[p for p, _ in _pages(slow=True)])
def test_tutorial_runs(page: str, blocks: list[Block], tmp_path: Path) -> None:
    _run(page, blocks, tmp_path, steps=None)
