"""Confidence-thresholded self-training on the model's own pseudo-labels (Lee 2013, "Pseudo-Label"; the
test-time form of e.g. Chen et al. 2022, "Contrastive Test-Time Adaptation", without the contrastive part).

At the first step of each :meth:`~medswin.adaptation.EntropyAdapter.adapt` call the model predicts the whole
volume (the sliding-window engine's blend, no gradients); voxels whose top class probability reaches
``threshold`` become pseudo-labels (their argmax; for region datasets, each region channel where ``p`` or
``1 - p`` reaches it).  Each step then minimises the cross-entropy of a seeded subset of windows against those
fixed pseudo-labels, counted voxels only, with respect to the chosen parameters.  Unlike entropy
minimisation the target does not move with the model, so a few steps cannot collapse it onto one class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..inference.sliding_window import WindowPlan
from .base import EntropyAdapter


class PseudoLabel(EntropyAdapter):
    """Self-training on confident pseudo-labels fixed at the first step (see the module docstring).

        adapter = PseudoLabel(model, steps=3, lr=1e-3, threshold=0.9)
        predictor = Predictor(model, spec, adapter=adapter)

    Arguments as :class:`~medswin.adaptation.EntropyAdapter`, plus ``threshold`` (in (0.5, 1]): the
    probability a voxel's prediction needs to become a pseudo-label.  ``AdaptationReport.losses`` holds
    the cross-entropy before each step.
    """

    method = "pseudo-label"

    def __init__(
        self,
        model: nn.Module,
        steps: int = 3,
        lr: float = 1e-3,
        *,
        threshold: float = 0.9,
        optimizer: str = "adam",
        episodic: bool = True,
        params: str | Sequence[str] = "encoder-norms",
        max_patches: int | None = 8,
        **options: Any,
    ) -> None:
        if not 0.5 < float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in (0.5, 1] (a probability), got {threshold}")
        self.threshold = float(threshold)
        self._targets: tuple[torch.Tensor, torch.Tensor] | None = None
        super().__init__(
            model,
            steps=steps,
            lr=lr,
            optimizer=optimizer,
            episodic=episodic,
            params=params,
            max_patches=max_patches,
            **options,
        )

    def adapt(self, image: torch.Tensor, mask: torch.Tensor | None = None):  # noqa: D102 (EntropyAdapter.adapt)
        self._targets = None  # pseudo-labels of THIS volume, made at its first step
        try:
            return super().adapt(image, mask)
        finally:
            self._targets = None

    def pseudo_labels(
        self, image: torch.Tensor, plan: WindowPlan, counted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(target, weight)`` on the padded grid of ``plan``: target ``(1, *padded)`` class indices (softmax)
        or ``(1, K, *padded)`` region values (sigmoid), weight of the same shape as the per-voxel loss
        (1 where the prediction is confident and the voxel is counted, else 0).

        Args:
            image: the volume ``(1, C, D, H, W)``.
            plan: its window plan.
            counted: ``(1, 1, *padded)`` bool, the voxels that count.
        """
        logits = self.blended_logits(image).to(image.device)  # (1, K, D, H, W)
        inside = counted[(slice(None), slice(None), *plan.crop)]
        if self.sigmoid:
            p = torch.sigmoid(logits)
            target = (p >= 0.5).float()
            weight = (torch.maximum(p, 1 - p) >= self.threshold) & inside
        else:
            confidence, target = torch.softmax(logits, 1).max(1)  # (1, D, H, W)
            weight = (confidence >= self.threshold) & inside[:, 0]
        return F.pad(target, plan.pad), F.pad(weight.float(), plan.pad)

    def _step(
        self, image: torch.Tensor, plan: WindowPlan, counted: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, int]:
        """Cross-entropy against the fixed pseudo-labels on a window subset; one optimizer step."""
        if self._targets is None:
            self._targets = self.pseudo_labels(image, plan, counted)
        target, weight = self._targets
        lead = (slice(None), slice(None)) if self.sigmoid else (slice(None),)
        windows = self._choose([sl for sl in plan.slices if weight[(*lead, *sl)].any()], generator)
        if not windows:  # nothing confident: no update
            return 0.0, 0
        total_weight = sum(float(weight[(*lead, *sl)].sum()) for sl in windows)
        padded, runner, scaler = plan.pad_image(image), self._runner(), self._grad_scaler()
        total = 0.0
        for group in self._batches(windows, "pseudo-label windows"):
            out = self._forward(runner, padded, group)
            t = torch.cat([target[(*lead, *sl)] for sl in group]).to(out.device)
            w = torch.cat([weight[(*lead, *sl)] for sl in group]).to(out.device)
            if self.sigmoid:
                voxel_loss = F.binary_cross_entropy_with_logits(out, t, reduction="none")
            else:
                voxel_loss = F.cross_entropy(out, t.long(), reduction="none")
            loss = (voxel_loss * w).sum() / total_weight
            scaler.scale(loss).backward()
            total += float(loss.detach())
        self._optimizer_step()
        return total, len(windows)
