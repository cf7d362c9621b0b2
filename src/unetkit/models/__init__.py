"""Model zoo. Importing this package registers every built-in model."""

from unetkit.models import unet, unetplusplus  # noqa: F401  (registration side effects)
from unetkit.models.base import SegmentationModel, SegModelConfig, load_model, save_pretrained

try:  # the diffusion denoiser registers itself too
    import unetkit.models.diffusion  # noqa: F401
except ModuleNotFoundError as err:  # pragma: no cover - only while the module is absent
    if err.name != "unetkit.models.diffusion":
        raise

__all__ = ["SegModelConfig", "SegmentationModel", "load_model", "save_pretrained"]
