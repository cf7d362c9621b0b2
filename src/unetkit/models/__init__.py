"""Model zoo. Importing this package registers every built-in model."""

from unetkit.models.base import SegmentationModel, SegModelConfig, load_model, save_pretrained
from unetkit.models.factory import create_model, list_models, supported_spatial_dims

__all__ = [
    "SegModelConfig",
    "SegmentationModel",
    "create_model",
    "list_models",
    "load_model",
    "save_pretrained",
    "supported_spatial_dims",
]
