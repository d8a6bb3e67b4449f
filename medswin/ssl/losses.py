"""Pretext losses MONAI lacks: Barlow Twins, SimMIM's masked L1, and the automatic weighted loss.

The contrastive loss is MONAI's ``ContrastiveLoss`` (NT-Xent; temperature 0.5 in the Swin UNETR
recipe), used as is by :mod:`medswin.ssl.tasks`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (identity without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t)
    return t


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Batch-normalise ``z`` ``(N, D)`` per feature without affine parameters (``BatchNorm1d(affine=False)``
    in training mode: mean and biased variance over the batch), with the statistics of the global
    batch under DDP."""
    n = _all_reduce_sum(torch.tensor(float(z.shape[0]), device=z.device))
    mean = _all_reduce_sum(z.sum(0)) / n
    var = _all_reduce_sum(((z - mean) ** 2).sum(0)) / n
    return (z - mean) / torch.sqrt(var + eps)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021): ``C = BN(z1)^T BN(z2) / N``,
    ``L = sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2``, for embeddings ``(N, D)`` of two views.

    Under DDP ``C`` is summed over ranks (differentiably) and ``N`` is the global batch, so every
    rank computes the loss of the whole batch; DDP's gradient averaging then yields that loss's
    exact gradient.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"Barlow Twins needs two (N, D) embeddings of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    z1, z2 = z1.float(), z2.float()
    n = _all_reduce_sum(torch.tensor(float(z1.shape[0]), device=z1.device))
    c = _all_reduce_sum(standardize(z1, eps).T @ standardize(z2, eps)) / n
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambd * off


def simmim_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's L1 on masked voxels only: ``sum(|pred - target| * m) / (sum(m) * C)``.

    ``pred``/``target`` ``(B, C, *S)``; ``mask`` ``(B, 1, *S)`` (1 = masked), broadcast over channels.
    Unmasked voxels do not enter the loss at all.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    mask = mask.to(pred.dtype)
    err = (pred - target).abs() * mask
    return err.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


class AutomaticWeightedLoss(nn.Module):
    """Multi-task weighting with learnable ``s_i`` (init 1): ``L = sum_i 0.5 / s_i^2 * L_i + log(1 + s_i^2)``.

    The CSwin UNet pretraining recipe (uncertainty weighting, Kendall et al. 2018, in the
    regularised form of Liebel & Koerner 2018).  ``forward(losses)`` takes a sequence of scalars.
    """

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"AutomaticWeightedLoss needs at least one task, got {num_tasks}")
        self.sigma = nn.Parameter(torch.ones(num_tasks))

    def forward(self, losses: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Weighted sum of ``len(losses) == num_tasks`` scalar losses."""
        if len(losses) != self.sigma.numel():
            raise ValueError(f"expected {self.sigma.numel()} task losses, got {len(losses)}")
        s2 = self.sigma.float() ** 2
        total = torch.zeros((), device=self.sigma.device)
        for i, loss in enumerate(losses):
            total = total + 0.5 / s2[i] * loss.float() + torch.log1p(s2[i])
        return total

    def weights(self) -> list[float]:
        """Current weights ``0.5 / s_i^2`` (for logging)."""
        return [0.5 / float(s) ** 2 for s in self.sigma.detach()]
