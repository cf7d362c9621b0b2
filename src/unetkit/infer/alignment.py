"""Moved to :mod:`unetkit.runtime.alignment` (the layer below the stages); these names stay importable here."""

from unetkit.runtime.alignment import (
    MIN_GAIN as MIN_GAIN,
)
from unetkit.runtime.alignment import (  # noqa: F401
    SHIFT_STEPS as SHIFT_STEPS,
)
from unetkit.runtime.alignment import (
    estimate_shift as estimate_shift,
)
from unetkit.runtime.alignment import (
    shift_probabilities as shift_probabilities,
)
from unetkit.runtime.alignment import (
    shift_tiles as shift_tiles,
)
