"""CSwin UNet, 3D: a CSWin Transformer encoder with the UNETR convolutional decoder.

Papers: CSWin Transformer (Dong et al., "CSWin Transformer: A General Vision Transformer Backbone
with Cross-Shaped Windows", CVPR 2022, arXiv:2107.00652) and CSwin-UNet (Li et al., "CSwin-UNet:
Transformer UNet with Cross-Shaped Windows for Medical Image Segmentation", 2023).  Both are 2D;
no author code exists for either in 3D, and this is our own 3D design written from the papers
(nothing copied), faithful to CSWin's block.  What we chose for 3D:

* **Three axis groups.**  A block's ``qkv = Linear(C, 3C)(LN x)`` is split into three contiguous
  groups of channels *and* heads, one per axis ``a`` of ``(D, H, W)`` (so heads and channels must
  be divisible by 3).  Group ``a`` attends inside stripes spanning the whole extent of axis ``a``
  and ``sw`` voxels along the two other axes: windows ``(D, sw, sw)``, ``(sw, H, sw)`` and
  ``(sw, sw, W)``; a stripe wider than the map covers the map.
* **LePE per window.**  Each window computes ``softmax(Q K^T / sqrt(d)) V + LePE(V)`` where LePE is
  a depthwise ``Conv3d(k=3, p=1, bias)`` on that window's own ``V`` (zero padding at the window
  borders), one convolution per group.  Groups are concatenated and projected (``Linear(C, C)``),
  then the usual residual DropPath and ``x + DropPath(MLP(LN x))`` (ratio 4, GELU).
* **Global last stage.**  Stripe width ``None`` (the default for stage 4): one branch with all
  heads, the whole volume one window, plus LePE.
* **Stem and merges.**  Stem ``Conv3d(in -> F, k7, s2, p3)`` + LayerNorm (tokens at /2); four
  stages at /2, /4, /8, /16 with ``F, 2F, 4F, 8F`` channels, each followed by a merge
  ``Conv3d(k3, s2, p1)`` (``C -> 2C``) + LayerNorm.  The five features (stem output and each
  merged stage output: ``F..16F`` at /2../32) have Swin UNETR's shapes, so the UNETR decoder of
  :mod:`medswin.layers.decoder` is reused unchanged.
* **Anisotropy.**  The stem stride and every merge stride are per-axis options (e.g. a
  ``(1, 2, 2)`` stem for thick-slice prostate MRI); the decoder then upsamples each level by the
  matching factor (transposed convolution, kernel = stride) and :attr:`CSwinUNet.size_divisor`
  becomes a per-axis tuple.
* **Uneven sizes.**  A map axis that is not a multiple of ``sw`` is zero-padded at its end; padded
  keys are masked (``-inf``: nothing attends to padding), padded values are zero for LePE and
  padded queries are cropped away.

Attention runs through ``scaled_dot_product_attention``; windows are gathered with reshape/permute
(no loops over windows) and LePE is one depthwise convolution over the batch of windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..layers.cswin import CSwinEncoder3D, as_stride, normalize_merge_strides
from ..layers.decoder import UNETRDecoder
from ._registry import register_model
from ._sizes import SizeRule

PAPER = "Li et al. 2023, CSwin-UNet; Dong et al. CVPR 2022, CSWin Transformer (arXiv:2107.00652); our 3D design"


class CSwinUNet(nn.Module):
    """CSwin UNet: CSwin encoder + UNETR decoder, ``(B, in, D, H, W)`` -> ``(B, out, D, H, W)``.

    Args:
        in_channels / out_channels: input channels and output classes.
        feature_size: ``F``, channels of the stem (48); stage ``i`` has ``F * 2^i`` channels.
        depths / num_heads: CSWin blocks and heads per stage (heads divisible by 3 where stripes
            are used).
        stripe_widths: stripe width per stage, ``None`` or 0 = global attention ((1, 2, 6, None)
            suits 96^3 inputs, whose stage maps are 48, 24, 12, 6 voxels wide).
        stem_stride: int or per-axis ``(d, h, w)``, e.g. ``(1, 2, 2)``.
        merge_strides: int, per-axis triple, or a list with one of those per stage.
        mlp_ratio: MLP hidden size over channels.
        drop_path_rate: stochastic depth, linear over all blocks up to this rate.
        use_checkpoint: gradient checkpointing of every CSWin block.

    Sizes: each axis must be a multiple of :attr:`size_divisor` (32 for stride 2 everywhere; a
    ``(d, h, w)`` tuple for anisotropic strides) and the bottleneck must hold more than one voxel.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        stripe_widths: Sequence[int | None] = (1, 2, 6, None),
        stem_stride: int | Sequence[int] = 2,
        merge_strides: int | Sequence[int] | Sequence[int | Sequence[int]] = 2,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"CSwin UNet has 4 stages (5 decoder levels); depths={tuple(depths)}")
        if not 0.0 <= drop_path_rate <= 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1], got {drop_path_rate}")
        stem = as_stride(stem_stride, "stem_stride")
        merges = normalize_merge_strides(merge_strides, len(depths))
        self.config: dict[str, Any] = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            stripe_widths=tuple(sw or None for sw in stripe_widths),
            stem_stride=stem,
            merge_strides=[tuple(m) for m in merges],
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.encoder = CSwinEncoder3D(
            in_channels,
            feature_size,
            depths=depths,
            num_heads=num_heads,
            stripe_widths=stripe_widths,
            stem_stride=stem,
            merge_strides=merges,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
        )
        strides = self.encoder.strides
        divisor = tuple(math.prod(s[a] for s in strides) for a in range(3))
        self.size_rule = SizeRule("CSwin UNet", divisor, min_bottleneck_voxels=2)
        upsample = [s[0] if len(set(s)) == 1 else s for s in strides]
        self.decoder = UNETRDecoder(in_channels, self.encoder.out_channels, out_channels, upsample=upsample)

    @property
    def size_divisor(self) -> int | tuple[int, ...]:
        """Per-axis product of the strides: an int when every axis shares it, else ``(d, h, w)``."""
        return self.size_rule.size_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, D, H, W)`` -> logits ``(B, out_channels, D, H, W)``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        if not torch.jit.is_tracing():
            self.size_rule.check(x.shape[2:])
        return self.decoder(x, self.encoder(x))


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------


@register_model(CSwinUNet, default_roi=(96, 96, 96), paper=PAPER)
def cswin_unet_tiny() -> dict[str, Any]:
    """CSwin UNet, F=12, depths (2, 2, 2, 2), stripes (1, 2, 4, global) suited to 64^3 inputs, no stochastic
    depth (deterministic training steps; used by the tests).  4.36M parameters (4,357,934) for 1 -> 14 channels."""
    return dict(feature_size=12, depths=(2, 2, 2, 2), stripe_widths=(1, 2, 4, None), drop_path_rate=0.0)


@register_model(CSwinUNet, default_roi=(96, 96, 96), paper=PAPER)
def cswin_unet_small() -> dict[str, Any]:
    """CSwin UNet, F=24, depths (2, 2, 4, 2), stripes (1, 2, 6, global).

    17.6M parameters (17,619,758) for 1 -> 14 channels."""
    return dict(feature_size=24, depths=(2, 2, 4, 2))


@register_model(CSwinUNet, default_roi=(96, 96, 96), paper=PAPER)
def cswin_unet_base() -> dict[str, Any]:
    """CSwin UNet, F=48, depths (2, 2, 6, 2), stripes (1, 2, 6, global): the design defaults.

    71.3M parameters (71,281,742) for 1 -> 14 channels."""
    return dict(feature_size=48, depths=(2, 2, 6, 2))
