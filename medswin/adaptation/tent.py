"""TENT (Wang et al. 2021, "Tent: Fully Test-time Adaptation by Entropy Minimization"), for 3D volumes.

Upstream (https://github.com/DequanWang/tent) adapts the BatchNorm affines of a 2D classifier on
each test batch.  Here: the affine weight/bias of the encoder's LayerNorm / GroupNorm / affine
InstanceNorm modules, and the "batch" is a seeded random subset of at most ``max_patches``
sliding windows of the volume.  Loss = mean over those windows of the mean voxel entropy of the
window's softmax, normalised by ``ln C`` (binary entropy / ``ln 2`` per region for sigmoid
datasets); gradients are accumulated window by window, so memory is that of ``sw_batch_size``
windows.  Adam lr 1e-4 (or SGD lr 1e-3, momentum 0.9), 1 step, episodic by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..inference.sliding_window import WindowPlan
from .base import EntropyAdapter, normalized_entropy

DEFAULT_LR = {"adam": 1e-4, "sgd": 1e-3}


class Tent(EntropyAdapter):
    """TENT on sliding-window patches (see the module docstring; arguments as :class:`EntropyAdapter`).

        adapter = Tent(model, steps=1, params="encoder-norms", episodic=True)
        predictor = Predictor(model, spec, adapter=adapter)   # adapts before each prediction

    ``lr`` defaults to 1e-4 for Adam and 1e-3 for SGD; ``max_patches`` (default 8) bounds the
    windows per step.
    """

    method = "tent"

    def __init__(
        self,
        model: nn.Module,
        steps: int = 1,
        lr: float | None = None,
        *,
        optimizer: str = "adam",
        episodic: bool = True,
        params: str | Sequence[str] = "encoder-norms",
        max_patches: int | None = 8,
        **options: Any,
    ) -> None:
        if optimizer not in DEFAULT_LR:
            raise ValueError(f"optimizer must be one of {tuple(DEFAULT_LR)}, got {optimizer!r}")
        super().__init__(
            model,
            steps=steps,
            lr=DEFAULT_LR[optimizer] if lr is None else lr,
            optimizer=optimizer,
            episodic=episodic,
            params=params,
            max_patches=max_patches,
            **options,
        )

    def _step(
        self, image: torch.Tensor, plan: WindowPlan, counted: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, int]:
        """Mean window entropy over a random window subset; one optimizer step."""
        region = (slice(None), slice(None))
        padded, runner = plan.pad_image(image), self._runner()
        candidates = [sl for sl in plan.slices if counted[(*region, *sl)].any()]
        windows = self._choose(candidates, generator)
        scaler = self._grad_scaler()
        total = 0.0
        for group in self._batches(windows, "tent windows"):
            h = normalized_entropy(self._forward(runner, padded, group), bool(self.sigmoid))  # (n, *roi)
            weights = torch.cat([counted[(*region, *sl)][:, 0] for sl in group]).to(h.device, torch.float32)
            per_window = (h * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)
            loss = per_window.sum() / len(windows)
            scaler.scale(loss).backward()
            total += float(loss.detach())
        self._optimizer_step()
        return total, len(windows)
