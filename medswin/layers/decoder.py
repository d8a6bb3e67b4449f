"""UNETR-style decoder shared by Swin UNETR and CSwin UNet (any 5-level encoder).

Given the input volume and five encoder features ``f0..f4`` with channels ``c0..c4`` at
reductions ``r, 2r, 4r, 8r, 16r`` (Swin UNETR: ``F, 2F, 4F, 8F, 16F`` at /2../32), it computes
(MONAI ``SwinUNETR`` wiring, module for module)::

    s_in = ResConvBlock(x)            (in -> c0)       full resolution
    s0, s1, s2 = ResConvBlock(f0, f1, f2)              same channels
    b = ResConvBlock(f4)                               bottleneck
    d3 = Up(b, f3); d2 = Up(d3, s2); d1 = Up(d2, s1); d0 = Up(d1, s0); d = Up(d0, s_in)
    logits = Conv1x1(d)                                (c0 -> out)

Each ``Up`` upsamples by 2 by default; an anisotropic encoder (e.g. a ``(1, 2, 2)`` stem for
thick-slice MRI) passes its per-level strides as ``upsample`` and every ``Up`` uses the matching
per-axis factor (transposed convolution with kernel = stride = the factor).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .conv import OutBlock, ResConvBlock, UpBlock


class UNETRDecoder(nn.Module):
    """Convolutional decoder from five multi-scale features to full-resolution logits.

    Args:
        in_channels: channels of the network input (the full-resolution skip reads it).
        encoder_channels: ``[c0, c1, c2, c3, c4]`` of the encoder features.
        out_channels: output classes.
        spatial_dims: 2 or 3.
        upsample: the encoder's down-sampling factor at each level, undone by the decoder: an int
            for all levels (2, Swin UNETR), or five entries in encoder order -- ``upsample[0]``
            from the input to ``f0``, ``upsample[i]`` from ``f(i-1)`` to ``f(i)`` -- each an int
            or one factor per axis, e.g. ``[(1, 2, 2), (1, 2, 2), 2, 2, 2]``.

    ``forward(x, feats)``: ``x`` ``(B, in, *S)``, ``feats[i]`` ``(B, c_i, *S / 2^(i+1))`` (or
    ``S`` divided by the product of ``upsample[:i+1]``) -> logits ``(B, out, *S)``.
    """

    def __init__(
        self,
        in_channels: int,
        encoder_channels: Sequence[int],
        out_channels: int,
        spatial_dims: int = 3,
        upsample: int | Sequence[int | Sequence[int]] = 2,
    ) -> None:
        super().__init__()
        c = list(encoder_channels)
        if len(c) != 5:
            raise ValueError(f"UNETRDecoder needs 5 encoder feature channels, got {c}")
        factors = [upsample] * 5 if isinstance(upsample, int) else list(upsample)
        if len(factors) != 5:
            raise ValueError(f"UNETRDecoder needs an int or 5 per-level upsample factors, got {upsample!r}")
        self.input_block = ResConvBlock(in_channels, c[0], spatial_dims=spatial_dims)
        self.skip_blocks = nn.ModuleList(ResConvBlock(c[i], c[i], spatial_dims=spatial_dims) for i in range(3))
        self.bottleneck_block = ResConvBlock(c[4], c[4], spatial_dims=spatial_dims)
        # up_blocks[0]: c4 -> c3 (skip f3) ... up_blocks[3]: c1 -> c0 (skip s0), up_blocks[4]: c0 -> c0 (skip s_in)
        # up_blocks[i] undoes the stride of level 4 - i
        self.up_blocks = nn.ModuleList(
            [UpBlock(c[4 - i], c[3 - i], spatial_dims, factors[4 - i]) for i in range(4)]
            + [UpBlock(c[0], c[0], spatial_dims, factors[0])]
        )
        self.head = OutBlock(c[0], out_channels, spatial_dims)

    def forward(self, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode ``feats`` (five maps) with the input ``x`` as the finest skip."""
        return self.decode(self.bottleneck(feats[4]), x, feats)

    def bottleneck(self, f4: torch.Tensor) -> torch.Tensor:
        """The residual block on the deepest feature ``(B, c4, ...)`` (a model may mix views here)."""
        return self.bottleneck_block(f4)

    def decode(self, d: torch.Tensor, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Up-sample the bottleneck ``d`` through the skips of ``feats`` and ``x`` to logits."""
        skips = [self.skip_blocks[i](feats[i]) for i in range(3)]
        d = self.up_blocks[0](d, feats[3])
        d = self.up_blocks[1](d, skips[2])
        d = self.up_blocks[2](d, skips[1])
        d = self.up_blocks[3](d, skips[0])
        d = self.up_blocks[4](d, self.input_block(x))
        return self.head(d)
