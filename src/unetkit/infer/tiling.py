"""Moved to :mod:`unetkit.runtime.tiling` (the layer below the stages); these names stay importable here."""

from unetkit.runtime.tiling import (
    AUTO_MAX_PASS_PIXELS_2D as AUTO_MAX_PASS_PIXELS_2D,
)
from unetkit.runtime.tiling import (  # noqa: F401
    BLENDS as BLENDS,
)
from unetkit.runtime.tiling import (
    PAD_MODES as PAD_MODES,
)
from unetkit.runtime.tiling import (
    ReadWindow as ReadWindow,
)
from unetkit.runtime.tiling import (
    Tile as Tile,
)
from unetkit.runtime.tiling import (
    TileFn as TileFn,
)
from unetkit.runtime.tiling import (
    TileSettings as TileSettings,
)
from unetkit.runtime.tiling import (
    WindowStats as WindowStats,
)
from unetkit.runtime.tiling import (
    WriteWindow as WriteWindow,
)
from unetkit.runtime.tiling import (
    axis_starts as axis_starts,
)
from unetkit.runtime.tiling import (
    blend_weights as blend_weights,
)
from unetkit.runtime.tiling import (
    constant_weights as constant_weights,
)
from unetkit.runtime.tiling import (
    fits_one_tile as fits_one_tile,
)
from unetkit.runtime.tiling import (
    gaussian_weights as gaussian_weights,
)
from unetkit.runtime.tiling import (
    pad_to_tile as pad_to_tile,
)
from unetkit.runtime.tiling import (
    padded_shape as padded_shape,
)
from unetkit.runtime.tiling import (
    pass_tiles as pass_tiles,
)
from unetkit.runtime.tiling import (
    predict_raster_windows as predict_raster_windows,
)
from unetkit.runtime.tiling import (
    raster_chunk_count as raster_chunk_count,
)
from unetkit.runtime.tiling import (
    sliding_window_predict as sliding_window_predict,
)
from unetkit.runtime.tiling import (
    tile_grid as tile_grid,
)
