"""Sliding-window prediction of a whole volume with MONAI's inferer.

The model sees ``roi_size`` patches (Gaussian-blended with ``overlap``); the roi is checked against
the model's ``size_divisor`` up front so a bad size fails with an explanation instead of a shape
error deep inside the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from ..amp import autocast


def check_roi(model: nn.Module, roi_size: Sequence[int]) -> None:
    """Raise ``ValueError`` when ``roi_size`` does not suit ``model`` (divisibility, minimum size)."""
    check = getattr(model, "check_input_size", None)
    if check is not None:
        try:
            check(tuple(roi_size))
        except ValueError as exc:
            raise ValueError(f"roi_size {tuple(roi_size)} does not fit {type(model).__name__}: {exc}") from None
        return
    k = getattr(model, "size_divisor", 1)
    if any(int(r) % k for r in roi_size):
        raise ValueError(f"roi_size {tuple(roi_size)} must be a multiple of {k} for {type(model).__name__}")


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    amp: str = "auto",
) -> torch.Tensor:
    """Logits ``(B, out, D, H, W)`` for ``image`` ``(B, in, D, H, W)`` by Gaussian-blended sliding windows."""
    check_roi(model, roi_size)
    model.eval()
    device = next(model.parameters()).device
    with autocast(amp, device):
        logits = sliding_window_inference(
            image, tuple(roi_size), sw_batch_size, model, overlap=overlap, mode="gaussian", sw_device=device
        )
    return logits.float()


def predict_labels(model: nn.Module, image: torch.Tensor, roi_size: Sequence[int], **kwargs: Any) -> torch.Tensor:
    """Label map ``(B, D, H, W)`` (argmax over classes); arguments as :func:`predict_logits`."""
    return predict_logits(model, image, roi_size, **kwargs).argmax(1)
