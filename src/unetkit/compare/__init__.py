"""``unetkit compare``: train several U-Net variants on the same split and budget, score each at several TTA
levels on the held-out part with overlap, boundary and consistency metrics, and report paired differences.

It composes the training and inference stages (as :mod:`unetkit.serve` composes inference and export):
:mod:`unetkit.compare.study` plans and trains, :mod:`unetkit.compare.scoring` scores, and
:mod:`unetkit.compare.report` writes ``report.json``, ``report.md`` and the plots.
"""

from __future__ import annotations

from unetkit.compare.options import MIN_BUDGET_S, CompareOptions
from unetkit.compare.study import run_study

__all__ = ["MIN_BUDGET_S", "CompareOptions", "run_study"]
