"""Moved to :mod:`unetkit.runtime.postprocess` (the layer below the stages); these names stay importable here."""

from unetkit.runtime.postprocess import (  # noqa: F401
    MODES as MODES,
)
from unetkit.runtime.postprocess import (
    fill_holes as fill_holes,
)
from unetkit.runtime.postprocess import (
    keep_largest_component as keep_largest_component,
)
from unetkit.runtime.postprocess import (
    label_instances as label_instances,
)
from unetkit.runtime.postprocess import (
    postprocess as postprocess,
)
from unetkit.runtime.postprocess import (
    probabilities_to_labels as probabilities_to_labels,
)
from unetkit.runtime.postprocess import (
    probs_to_mask as probs_to_mask,
)
from unetkit.runtime.postprocess import (
    remove_small_components as remove_small_components,
)
