"""UNETR-style decoder shared by Swin UNETR and CSwin UNet (any 5-level encoder).

Given the input volume and five encoder features ``f0..f4`` with channels ``c0..c4`` at
reductions ``r, 2r, 4r, 8r, 16r`` (Swin UNETR: ``F, 2F, 4F, 8F, 16F`` at /2../32), it computes
(MONAI ``SwinUNETR`` wiring, module for module)::

    s_in = ResConvBlock(x)            (in -> c0)       full resolution
    s0, s1, s2 = ResConvBlock(f0, f1, f2)              same channels
    b = ResConvBlock(f4)                               bottleneck
    d3 = Up(b, f3); d2 = Up(d3, s2); d1 = Up(d2, s1); d0 = Up(d1, s0); d = Up(d0, s_in)
    logits = Conv1x1(d)                                (c0 -> out)
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

    ``forward(x, feats)``: ``x`` ``(B, in, *S)``, ``feats[i]`` ``(B, c_i, *S / 2^(i+1))`` ->
    logits ``(B, out, *S)``.
    """

    def __init__(
        self, in_channels: int, encoder_channels: Sequence[int], out_channels: int, spatial_dims: int = 3
    ) -> None:
        super().__init__()
        c = list(encoder_channels)
        if len(c) != 5:
            raise ValueError(f"UNETRDecoder needs 5 encoder feature channels, got {c}")
        self.input_block = ResConvBlock(in_channels, c[0], spatial_dims=spatial_dims)
        self.skip_blocks = nn.ModuleList(ResConvBlock(c[i], c[i], spatial_dims=spatial_dims) for i in range(3))
        self.bottleneck_block = ResConvBlock(c[4], c[4], spatial_dims=spatial_dims)
        # up_blocks[0]: c4 -> c3 (skip f3) ... up_blocks[3]: c1 -> c0 (skip s0), up_blocks[4]: c0 -> c0 (skip s_in)
        self.up_blocks = nn.ModuleList(
            [UpBlock(c[4 - i], c[3 - i], spatial_dims) for i in range(4)] + [UpBlock(c[0], c[0], spatial_dims)]
        )
        self.head = OutBlock(c[0], out_channels, spatial_dims)

    def forward(self, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Decode ``feats`` (five maps) with the input ``x`` as the finest skip."""
        skips = [self.skip_blocks[i](feats[i]) for i in range(3)]
        d = self.bottleneck_block(feats[4])
        d = self.up_blocks[0](d, feats[3])
        d = self.up_blocks[1](d, skips[2])
        d = self.up_blocks[2](d, skips[1])
        d = self.up_blocks[3](d, skips[0])
        d = self.up_blocks[4](d, self.input_block(x))
        return self.head(d)
