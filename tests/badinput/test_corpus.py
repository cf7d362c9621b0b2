"""The bad-input corpus (``_cases.CASES``): one parametrized test holds every case to the same rules.

Each case asserts its exit code (usage 2, runtime 1, or the service's HTTP status), one output line naming the
file or field and the problem, no traceback, no temporary or unexpected files, every pre-existing file unchanged,
and that no hostile pickle ran (see ``_harness.check``). ``scripts/badinput_table.py`` prints the same table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _cases import CASES
from _harness import DATASETS, Case, Workspace, check, execute

pytest.importorskip("fastapi", reason="the serve extra is needed for the serve-app cases")


def test_the_corpus_is_big_and_covers_every_command() -> None:
    assert len(CASES) >= 40
    assert {c.command for c in CASES} >= {"check", "train", "predict", "evaluate", "export", "serve", "serve-app", "api"}
    assert sum(c.subprocess for c in CASES) >= 3


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, template_run: Path) -> None:
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS}")
    ws = Workspace(tmp_path / "ws", template_run)
    ws.root.mkdir()
    outcome = execute(case, ws)
    check(case, outcome, ws)
