"""What the kill-and-resume tests read from a run folder while it trains."""

from __future__ import annotations

import json
from pathlib import Path


def saved_step(run: Path) -> int:
    """The step of the run's last saved training state (0 while none is readable yet)."""
    try:
        return int(json.loads((run / "state.json").read_text())["scalars"]["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0
