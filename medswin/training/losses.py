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
            raise ValueError(f"deep supervision weights name outputs {missing} the model did not return ({sorted(outputs)})")
        total = 0.0
        for key, weight in weights.items():
            out = outputs[key]
            tgt = target
            if out.shape[2:] != target.shape[2:]:
                tgt = F.interpolate(target.float(), size=out.shape[2:], mode="nearest")
            total = total + weight * self.loss(out, tgt)
        return total  # type: ignore[return-value]


def make_loss(spec: DatasetSpec, model: nn.Module, weights: Mapping[str, float] | None = None) -> DeepSupervisionLoss:
    """The training loss for ``spec`` and ``model`` (deep-supervision weights: config > model > equal)."""
    return DeepSupervisionLoss(base_loss(spec), weights or getattr(model, "deep_supervision_weights", None))
