"""Moved to :mod:`unetkit.runtime.overlay` (the layer below the stages); these names stay importable here."""

from unetkit.runtime.overlay import (
    DEFAULT_PALETTE as DEFAULT_PALETTE,
)
from unetkit.runtime.overlay import (  # noqa: F401
    RGB as RGB,
)
from unetkit.runtime.overlay import (
    class_colour as class_colour,
)
from unetkit.runtime.overlay import (
    make_overlay as make_overlay,
)
from unetkit.runtime.overlay import (
    outline_pixels as outline_pixels,
)
from unetkit.runtime.overlay import (
    to_uint8_rgb as to_uint8_rgb,
)
