"""ETTA, the entropy-based test-time adaptation of UKBOB (Bourigault et al. 2025), done so that it works.

The method: minimise the entropy of the WHOLE-VOLUME sliding-window prediction with respect to the
norm-layer affines (SGD lr 0.01, 3 steps), then predict with the ADAPTED parameters and keep the
largest component per class.  The released script computes the loss under ``no_grad`` and never
uses the adapted weights for the final prediction; here the model object itself is adapted, so
the predictor's next forward uses the new values (tested).

The whole-volume loss is exact while memory stays that of ``sw_batch_size`` windows:

1. blend every window's logits without gradients with the sliding-window engine (the predictor's blend):
   ``L = sum_w pad(w * out_w) / count``;
2. loss = mean normalised entropy of ``softmax(L)`` over the counted voxels (optionally only those
   with entropy below ``entropy_filter``, i.e. ``H < filter * ln C``; the mask carries no gradient),
   and its gradient ``G = dloss/dL`` (one volume-sized tensor);
3. recompute each window's forward with gradients and backpropagate ``G[window] * w / count[window]``,
   which is exactly ``dloss/dout_w``: the parameter gradients add up to the whole-volume gradient.

The largest-component post-processing is the predictor's ``largest_component`` option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..inference.sliding_window import WindowPlan, gaussian_importance
from .base import EntropyAdapter, normalized_entropy


class Etta(EntropyAdapter):
    """ETTA: entropy of the blended whole-volume prediction (see the module docstring).

        adapter = Etta(model, steps=3, lr=0.01, entropy_filter=0.4)
        predictor = Predictor(model, spec, adapter=adapter, largest_component=True)

    Arguments as :class:`EntropyAdapter`, plus ``entropy_filter`` (``None``: every counted voxel;
    e.g. 0.4: only voxels whose normalised entropy is below 0.4).  ``max_patches`` (default ``None``)
    limits the windows whose gradient is backpropagated per step (the loss still covers the volume).
    """

    method = "etta"

    def __init__(
        self,
        model: nn.Module,
        steps: int = 3,
        lr: float = 0.01,
        *,
        entropy_filter: float | None = None,
        optimizer: str = "sgd",
        episodic: bool = True,
        params: str | Sequence[str] = "encoder-norms",
        max_patches: int | None = None,
        **options: Any,
    ) -> None:
        if entropy_filter is not None and not 0 < entropy_filter <= 1:
            raise ValueError(f"entropy_filter must be in (0, 1] (a fraction of ln C), got {entropy_filter}")
        self.entropy_filter = entropy_filter
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

    def _step(
        self, image: torch.Tensor, plan: WindowPlan, counted: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, int]:
        """Whole-volume entropy, its exact gradient accumulated window by window; one optimizer step."""
        blended = self.blended_logits(image).to(image.device)  # (1, K, D, H, W) float32: the engine's blend
        blended.requires_grad_(True)
        h = normalized_entropy(blended, bool(self.sigmoid))[:, None]  # (1, 1, D, H, W)
        counted = counted[(slice(None), slice(None), *plan.crop)]
        weights = counted.clone()
        if self.entropy_filter is not None:
            weights &= h.detach() < self.entropy_filter
        n = int(weights.sum())
        if n == 0:  # nothing below the filter: no update this step
            return float((h.detach() * counted).sum() / counted.sum()), 0
        loss = (h * weights).sum() / n
        (grad,) = torch.autograd.grad(loss, blended)
        # the blend's backward: d loss / d out_w = pad(G)[window] * weight / summed_weights[window]
        grad = F.pad(grad, plan.pad) / plan.summed_weights(grad.device)
        weights = F.pad(weights, plan.pad)
        windows = self._choose([sl for sl in plan.slices if weights[(slice(None), slice(None), *sl)].any()], generator)
        padded, runner, scaler = plan.pad_image(image), self._runner(), self._grad_scaler()
        for group in self._batches(windows, "etta windows"):
            out = self._forward(runner, padded, group)
            g = torch.cat([grad[(slice(None), slice(None), *sl)] for sl in group]).to(out.device)
            g = g * gaussian_importance(plan.roi, 0.125, str(out.device))
            out.backward(scaler.scale(g))
        self._optimizer_step()
        return float(loss.detach()), len(windows)
