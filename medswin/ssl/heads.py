"""Pretraining heads on an encoder's deepest feature map (the bottleneck ``(B, C, *S / r)``).

Every head sees the bottleneck after a parameter-free LayerNorm over channels
(:func:`normalize_bottleneck`; Swin UNETR's encoder already normalises its features this way, and
normalising twice changes nothing but rounding).  Token-level heads (rotation, contrastive,
Barlow Twins) use the *mean* of the bottleneck tokens (:func:`pool_bottleneck`): the upstream Swin
UNETR code takes token 0 for rotation and token 1 for contrast, but in two differently rotated
views a fixed token sees different anatomy, so the mean is the rotation-consistent choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.utils import pixelshuffle
from torch import nn

from ..layers.conv import ChannelsLastConv3d


def normalize_bottleneck(feat: torch.Tensor) -> torch.Tensor:
    """Parameter-free LayerNorm over channels of ``(B, C, *S)`` (same shape)."""
    moved = feat.movedim(1, -1)
    return F.layer_norm(moved, moved.shape[-1:]).movedim(-1, 1)


def pool_bottleneck(feat: torch.Tensor) -> torch.Tensor:
    """Mean of the normalised bottleneck tokens: ``(B, C, *S)`` -> ``(B, C)``."""
    return normalize_bottleneck(feat).flatten(2).mean(2)


def upsampling_steps(reduction: int | Sequence[int]) -> list[tuple[int, int, int]]:
    """Per-step x2 scale factors (per axis) that undo an encoder reduction, e.g. 32 -> five ``(2, 2, 2)``;
    an anisotropic ``(16, 32, 32)`` -> four ``(2, 2, 2)`` then one ``(1, 2, 2)``."""
    r = (reduction,) * 3 if isinstance(reduction, int) else tuple(int(v) for v in reduction)
    logs = []
    for v in r:
        n = int(round(math.log2(v)))
        if v < 1 or 2**n != v:
            raise ValueError(f"encoder reduction {r} must be a power of two per axis")
        logs.append(n)
    return [tuple(2 if step < n else 1 for n in logs) for step in range(max(logs))]  # type: ignore[misc]


class ReconstructionHead(nn.Module):
    """Swin UNETR's inpainting decoder: per x2 step ``Conv3d(k3) -> InstanceNorm -> LeakyReLU -> trilinear x2``,
    then ``Conv1x1 -> out_channels``: ``(B, C, *S / r)`` -> ``(B, out_channels, *S)``.

    Channels halve at every step and stop at ``C / 16`` (for the 16F bottleneck of Swin UNETR:
    16F -> 8F -> 4F -> 2F -> F -> F, as upstream).
    """

    def __init__(self, in_dim: int, out_channels: int, reduction: int | Sequence[int]) -> None:
        super().__init__()
        self.scales = upsampling_steps(reduction)
        floor = max(1, in_dim // 16)
        dims = [in_dim] + [max(in_dim // 2 ** (i + 1), floor) for i in range(len(self.scales))]
        self.convs = nn.ModuleList(ChannelsLastConv3d(a, b, 3, padding=1) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.InstanceNorm3d(b) for b in dims[1:])
        self.out = ChannelsLastConv3d(dims[-1], out_channels, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S / r)`` -> ``(B, out_channels, *S)``."""
        x = normalize_bottleneck(feat)
        for conv, norm, scale in zip(self.convs, self.norms, self.scales):
            x = F.leaky_relu(norm(conv(x)))
            x = F.interpolate(x, scale_factor=scale, mode="trilinear", align_corners=False)
        return self.out(x)


class SimMIMHead(nn.Module):
    """SimMIM's light decoder in 3D: ``Conv3d(C -> r^3 * out_channels, 1)`` then a 3D pixel shuffle by ``r``.

    ``(B, C, *S / r)`` -> ``(B, out_channels, *S)``; ``r`` is the encoder's bottleneck reduction
    (isotropic only: MONAI's ``pixelshuffle`` takes one factor).
    """

    def __init__(self, in_dim: int, out_channels: int, reduction: int | Sequence[int]) -> None:
        super().__init__()
        r = reduction if isinstance(reduction, int) else tuple(reduction)
        if not isinstance(r, int):
            if len(set(r)) != 1:
                raise ValueError(f"SimMIM's pixel-shuffle head needs an isotropic encoder reduction, got {r}")
            r = r[0]
        self.reduction = int(r)
        self.proj = nn.Conv3d(in_dim, self.reduction**3 * out_channels, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S / r)`` -> ``(B, out_channels, *S)``."""
        return pixelshuffle(self.proj(normalize_bottleneck(feat).contiguous()), 3, self.reduction)


class BarlowProjector(nn.Module):
    """Barlow Twins projector: ``[Linear(no bias) -> BatchNorm1d -> ReLU] x (n - 1) -> Linear(no bias)``.

    ``dims`` are the output sizes of the ``n`` linear layers (the paper: 8192 x 3; default here 2048
    x 3).  ``(B, C)`` -> ``(B, dims[-1])``.
    """

    def __init__(self, in_dim: int, dims: Sequence[int] = (2048, 2048, 2048)) -> None:
        super().__init__()
        if not dims or any(int(d) < 1 for d in dims):
            raise ValueError(f"Barlow Twins projector sizes must be positive, got {tuple(dims)}")
        layers: list[nn.Module] = []
        sizes = [in_dim, *(int(d) for d in dims)]
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` -> ``(B, dims[-1])``."""
        return self.net(pooled)
