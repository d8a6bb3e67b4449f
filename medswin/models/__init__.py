"""Model architectures and the registry that builds them by name (``create_model``).

Importing this package imports every model file, and each registers its presets.
"""

from ._registry import (
    MODEL_KINDS,
    ModelEntry,
    create_model,
    get_entry,
    list_models,
    model_info,
    model_kind,
    register_model,
    valid_kwargs,
)
from ._sizes import SizeRule, check_input_size, check_roi
from ._weights import LoadReport, WeightLoadError, load_encoder_weights, load_weights
from .cswin_unet import CSwinUNet
from .ds_transunet import DSTransUNet
from .swin_unetr import SwinUNETR, load_monai_checkpoint
from .swin_x2s import SwinX2S

__all__ = [
    "MODEL_KINDS",
    "CSwinUNet",
    "DSTransUNet",
    "LoadReport",
    "ModelEntry",
    "SizeRule",
    "SwinUNETR",
    "SwinX2S",
    "WeightLoadError",
    "check_input_size",
    "check_roi",
    "create_model",
    "get_entry",
    "list_models",
    "load_encoder_weights",
    "load_monai_checkpoint",
    "load_weights",
    "model_info",
    "model_kind",
    "register_model",
    "valid_kwargs",
]
