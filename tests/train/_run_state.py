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


def assert_same_last_weights(a: Path, b: Path) -> None:
    """The two runs' ``last`` checkpoints hold bit-identical tensors under the same names."""
    import torch
    from safetensors.torch import load_file

    wa = load_file(str(a / "last" / "model.safetensors"))
    wb = load_file(str(b / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
