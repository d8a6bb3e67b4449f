"""Segmentation losses from a dataset spec, with deep supervision for models returning several outputs.

* labels (softmax): MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)``;
* regions (BraTS-style, overlapping): MONAI ``DiceCELoss(sigmoid=True)`` on one channel per region;
* a model returning a dict of outputs in training mode (``{"out": ..., "aux1": ..., ...}``) is
  trained on the weighted sum of the loss of each output (weights from the config, else the
  model's ``deep_supervision_weights``, else equal); auxiliary outputs smaller than the target are
  compared with a nearest-neighbour downsampled target.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

from ..data.spec import DatasetSpec


def base_loss(spec: DatasetSpec) -> nn.Module:
    """DiceCE with softmax over labels, or with sigmoid over regions when the spec defines regions."""
    if spec.regions:
        return DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    return DiceCELoss(to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss(output_k, target)`` over a dict of outputs (a plain tensor passes through)."""

    def __init__(self, loss: nn.Module, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = dict(weights) if weights else None

    def forward(self, outputs: torch.Tensor | Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``outputs``: logits ``(B, K, *S)`` or a dict of them; ``target``: ``(B, 1 or K, *S)``."""
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = self.weights or {k: 1.0 / len(outputs) for k in outputs}
        missing = sorted(set(weights) - set(outputs))
        if missing:
            raise ValueError(
                f"deep supervision weights name outputs {missing} the model did not return ({sorted(outputs)})"
            )
        total = 0.0
        for key, weight in weights.items():
            out = outputs[key]
            tgt = target
            if out.shape[2:] != target.shape[2:]:
                tgt = F.interpolate(target.float(), size=out.shape[2:], mode="nearest")
            total = total + weight * self.loss(out, tgt)
        return total  # type: ignore[return-value]


class BiplanarLoss(nn.Module):
    """Swin-X2S: per view ``DiceCE(out_v, y) + KL(p_w || p_v)`` with ``w`` the other view, averaged over views.

    ``KL(p_w || p_v) = sum_c p_w (log p_w - log p_v)`` per voxel (softmax over classes), averaged over
    voxels: each view's prediction is pulled towards the other's (``F.kl_div(log_softmax(out_v),
    softmax(out_w))``); gradients flow through both.
    """

    def __init__(self, loss: nn.Module, kl_weight: float = 1.0) -> None:
        super().__init__()
        self.loss, self.kl_weight = loss, kl_weight

    @staticmethod
    def kl(logits_v: torch.Tensor, logits_w: torch.Tensor) -> torch.Tensor:
        """Mean over voxels of ``KL(softmax(w) || softmax(v))``, for logits ``(B, K, *S)``."""
        log_v, log_w = F.log_softmax(logits_v, 1), F.log_softmax(logits_w, 1)
        return (log_w.exp() * (log_w - log_v)).sum(1).mean()

    def forward(self, outputs: Mapping[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``outputs``: ``{"coronal": (B, K, *S), "sagittal": (B, K, *S)}``; ``target`` ``(B, 1, *S)``."""
        if not isinstance(outputs, Mapping) or set(outputs) != {"coronal", "sagittal"}:
            raise ValueError("the biplanar loss needs the model's training output {'coronal': ..., 'sagittal': ...}")
        c, s = outputs["coronal"], outputs["sagittal"]
        total = self.loss(c, target) + self.loss(s, target)
        total = total + self.kl_weight * (self.kl(c, s) + self.kl(s, c))
        return total / 2


def make_loss(spec: DatasetSpec, model: nn.Module, weights: Mapping[str, float] | None = None) -> nn.Module:
    """The training loss for ``spec`` and ``model``: biplanar (Swin-X2S), or DiceCE with deep
    supervision (weights: config > model > equal)."""
    if spec.task == "biplanar":
        return BiplanarLoss(base_loss(spec))
    return DeepSupervisionLoss(base_loss(spec), weights or getattr(model, "deep_supervision_weights", None))
