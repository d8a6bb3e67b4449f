"""Marginal entropy over flipped views (MEMO, Zhang et al. 2022, "MEMO: Test Time Robustness via Adaptation
and Augmentation"), for 3D volumes.

MEMO averages the model's class probabilities over augmented copies of ONE test input and minimises the
entropy of that average, so the update rewards predictions that are both confident and consistent across
the views.  Upstream augments 2D images with AugMix; here the views are the volume's flips (none and each
spatial axis: 4 views, the mirror averaging nnU-Net predicts with), whose inverse maps every view's
prediction back voxel for voxel, and the "input" is a seeded subset of sliding windows.  Loss = mean over
the windows of the counted-voxel mean of ``H(mean_v p_v) / ln C`` (region datasets: the binary entropy of
each averaged region probability / ln 2).
"""

from __future__ import annotations

import math

import torch

from ..inference.sliding_window import WindowPlan
from .tent import Tent

FLIP_VIEWS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))  # flipped dims of (B, K, D, H, W)


def marginal_entropy(probabilities: torch.Tensor, sigmoid: bool = False) -> torch.Tensor:
    """Normalised entropy in [0, 1] of averaged probabilities ``(B, K, D, H, W)`` -> ``(B, D, H, W)``.

    Args:
        probabilities: class probabilities (softmax, summing to 1 over K) or region probabilities (sigmoid).
        sigmoid: region channels: binary entropy of each, ``/ ln 2``, averaged over K.
    """
    p = probabilities.float().clamp(1e-7, 1 - 1e-7)
    if sigmoid:
        return (-(p * p.log() + (1 - p) * (1 - p).log())).mean(1) / math.log(2.0)
    return -(p * p.log()).sum(1) / math.log(p.shape[1])


class Memo(Tent):
    """MEMO: entropy of the flip-averaged prediction of each window (see the module docstring).

        adapter = Memo(model, steps=1, lr=1e-4)
        predictor = Predictor(model, spec, adapter=adapter)

    Arguments and defaults as :class:`~medswin.adaptation.Tent` (Adam lr 1e-4 or SGD lr 1e-3, 1 step, 8
    windows per step); only the loss differs, and each window costs ``len(FLIP_VIEWS)`` forward and backward
    passes.
    """

    method = "memo"

    def _step(
        self, image: torch.Tensor, plan: WindowPlan, counted: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, int]:
        """Marginal entropy over the flips of a random window subset; one optimizer step."""
        region = (slice(None), slice(None))
        padded, runner, scaler = plan.pad_image(image), self._runner(), self._grad_scaler()
        windows = self._choose([sl for sl in plan.slices if counted[(*region, *sl)].any()], generator)
        total = 0.0
        for group in self._batches(windows, "memo windows"):
            x = torch.cat([padded[(*region, *sl)] for sl in group])
            mean = 0.0
            for dims in FLIP_VIEWS:
                out = runner(x.flip(dims) if dims else x).float()
                p = torch.sigmoid(out) if self.sigmoid else torch.softmax(out, 1)
                mean = mean + (p.flip(dims) if dims else p) / len(FLIP_VIEWS)
            h = marginal_entropy(mean, bool(self.sigmoid))  # (n, *roi)
            weights = torch.cat([counted[(*region, *sl)][:, 0] for sl in group]).to(h.device, torch.float32)
            loss = ((h * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)).sum() / len(windows)
            scaler.scale(loss).backward()
            total += float(loss.detach())
        self._optimizer_step()
        return total, len(windows)
