"""Model architectures and the registry that builds them by name (``create_model``)."""

from ._registry import create_model, list_models, model_info, register_model, valid_kwargs
from ._weights import LoadReport, WeightLoadError, load_encoder_weights
from .cswin_unet import CSwinUNet
from .ds_transunet import DSTransUNet
from .swin_unetr import SwinUNETR, load_monai_checkpoint
from .swin_x2s import SwinX2S

__all__ = [
    "CSwinUNet",
    "DSTransUNet",
    "LoadReport",
    "SwinUNETR",
    "SwinX2S",
    "WeightLoadError",
    "create_model",
    "list_models",
    "load_encoder_weights",
    "load_monai_checkpoint",
    "model_info",
    "register_model",
    "valid_kwargs",
]
