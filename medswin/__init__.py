"""medswin: shifted-window transformer models for 3D medical image segmentation.

Build models by name, run them with MONAI's sliding-window inference, load MONAI weights::

    import medswin
    net = medswin.create_model("swin_unetr_base", in_channels=1, out_channels=14)
    medswin.list_models("swin_unetr_*")

Importing the package is cheap: torch and the models load on first use of ``create_model``,
``list_models`` or ``model_info``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "model_info"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models", "model_info"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'medswin' has no attribute {name!r}")
