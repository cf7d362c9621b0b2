"""The one definition of each choice list a plan field and a command flag share (no torch, so the CLI's parser
and the plan checks can import it cheaply; the docs' reference is generated from the parser that uses it).

* :data:`TTA_LEVELS`: ``infer.tta`` and ``--tta`` (:mod:`unetkit.infer.tta` implements them).
* :data:`PRECISIONS`: ``train.precision``, ``infer.precision`` and ``--precision`` (:mod:`unetkit.precision`).
* :data:`LOSS_NAMES`: ``train.loss`` (:mod:`unetkit.losses` registers one loss per name).
"""

from __future__ import annotations

TTA_LEVELS = ("none", "flips", "d4", "d4+scales")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOSS_NAMES = ("dice_ce", "dice", "ce", "focal", "tversky", "focal_tversky", "dice_focal", "skeleton_recall",
              "dice_ce_skeleton")  # fmt: skip

__all__ = ["LOSS_NAMES", "PRECISIONS", "TTA_LEVELS"]
