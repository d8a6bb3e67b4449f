"""The plain MONAI path: ``monai.inferers.sliding_window_inference`` on the model, nothing of medswin's
engine.  It is the reference the engine, the predictor, trainer validation and the adapters are
tested against (same windows, same Gaussian blending, same logits to float32 rounding)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from ..amp import autocast
from ..models import check_roi


def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    amp: str = "auto",
) -> torch.Tensor:
    """Logits ``(B, K, D, H, W)`` (float32) of ``image`` ``(B, C, D, H, W)`` by MONAI's Gaussian-blended
    sliding windows.

    Args:
        model: a volume model (checked against ``roi_size``; put in eval mode).
        image: the volume(s).
        roi_size: window size.
        overlap: window overlap in [0, 1).
        sw_batch_size: windows per forward pass.
        amp: precision policy of :mod:`medswin.amp`.
    """
    check_roi(model, roi_size)
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode(), autocast(amp, device):
        logits = sliding_window_inference(
            image,
            tuple(roi_size),
            sw_batch_size,
            model,
            overlap=overlap,
            mode="gaussian",
            sw_device=device,
            device=image.device,
        )
    return torch.as_tensor(logits).float()
