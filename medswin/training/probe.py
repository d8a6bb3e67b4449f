"""How long one training step takes on this machine: measured on random data before a run starts, so that a
recipe can be chosen from the machine's real speed (not from the name of its CPU or ISA)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..amp import autocast
from ..data.spec import DatasetSpec
from .losses import make_loss


def time_training_step(
    spec: DatasetSpec,
    model_name: str,
    roi: Sequence[int],
    batch: int,
    amp: str = "auto",
    model_kwargs: dict[str, Any] | None = None,
    steps: int = 2,
    device: str | torch.device = "cpu",
) -> float:
    """Median seconds of a full training step as the trainer takes it (forward under the precision policy, the
    dataset's loss, backward, gradient clipping, AdamW) on random ``(batch, C, *roi)`` input, after one warm-up
    step.

    Args:
        spec: the dataset (channels, classes, loss).
        model_name: a registered 3D model.
        roi: the patch size ``(D, H, W)``.
        batch: patches per step.
        amp: the precision policy (see :mod:`medswin.amp`).
        model_kwargs: options for :func:`medswin.models.create_model`.
        steps: timed steps (their median is returned).
        device: where to run.
    """
    from ..models import create_model

    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    model = create_model(
        model_name, in_channels=spec.num_channels, out_channels=spec.out_channels, **(model_kwargs or {})
    ).to(device)
    model.train()
    loss_fn = make_loss(spec, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    image = torch.randn(batch, spec.num_channels, *roi, generator=generator).to(device)
    label = torch.randint(0, max(spec.labels.values()) + 1, (batch, 1, *roi), generator=generator).to(device)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        training_step(model, loss_fn, optimizer, image, label, amp)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step(
    model: torch.nn.Module,
    loss_fn: Any,
    optimizer: torch.optim.Optimizer,
    image: torch.Tensor,
    label: torch.Tensor,
    amp: str = "auto",
    grad_clip: float | None = 1.0,
) -> float:
    """One optimiser step as the trainer takes it: forward under the precision policy, the loss in float32 (deep
    supervision and per-view dicts included), backward, gradient clipping, the step; returns the loss (and waits
    for a GPU to finish, so that the time around it is the step's).

    Args:
        model: a model in training mode.
        loss_fn: the loss (``medswin.training.losses.make_loss``).
        optimizer: its optimiser.
        image: the input ``(B, C, D, H, W)``.
        label: the target ``(B, 1, D, H, W)`` (or region channels).
        amp: the precision policy (see :mod:`medswin.amp`).
        grad_clip: the gradient-norm bound (``None``: none).
    """
    with autocast(amp, image.device):
        out = model(image)
    out = {k: v.float() for k, v in out.items()} if isinstance(out, dict) else out.float()
    loss = loss_fn(out, label)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if image.device.type == "cuda":
        torch.cuda.synchronize(image.device)
    return float(loss.detach())
