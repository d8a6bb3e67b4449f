"""Swin-X2S: 3D segmentation from two orthogonal X-rays (Liu et al. 2025, "Swin-X2S: Reconstructing 3D
Shape from 2D Biplanar X-ray with Swin Transformers"; upstream code MIT-licensed, not copied:
reimplemented from the specification of our design document on medswin's shared core).

Input: a coronal and a sagittal view ``(B, C, H, W)`` each (``H`` along x resp. y, ``W`` along z;
see :mod:`medswin.data.drr`); output: logits ``(B, K, H, H, W)`` over the volume ``(x, y, z)``.

* one network, every weight shared between the two views;
* 2D Swin V1 encoder -- the same window-attention code path as the 3D models, run in 2D (patch 2,
  window 7, merging at every stage): features ``[input, F@/2, 2F@/4, 4F@/8, 8F@/16, 16F@/32]``;
* dimension expansion per level ``i``: a 2D map ``(B, c, h, w)`` becomes ``(B, 1, c, h, w)`` and
  ``Conv3d(1 -> D_i, 1x1x1)`` (weight 1, bias 0 at initialisation: every pixel is copied along its
  ray) adds the missing axis, placed at ``y`` for the coronal view and at ``x`` for the sagittal
  one, so both views land on the same ``(x, y, z)`` grid;
* per level one residual conv block (k3, InstanceNorm) and the UNETR up-blocks
  16F -> 8F -> 4F -> 2F -> F -> F -> Conv1x1 (the :class:`~medswin.layers.decoder.UNETRDecoder`);
* cross-view attention at the bottleneck only: ``Z_v = flatten(Conv1x1x1(b_v)) + P`` (learned
  position embedding, zeros at init), one shared LayerNorm (eps 1e-6), ``Z_a <- W_o softmax(Q_a
  K_b^T / sqrt(d)) V_b`` and symmetrically, shared projections, ``heads[3]`` heads, no residual, no
  MLP, a final LayerNorm -- exactly as specified;
* training mode returns one logits volume per view (``{"coronal": ..., "sagittal": ...}``, trained
  with per-view DiceCE plus a KL term to the other view), eval mode the average of the two.

What we chose: the input level is expanded like the others (the full-resolution skip of the UNETR
decoder); the position embedding fixes the input size (``img_size``, checked); presets map the
paper's T/S sizes to ``_small``/``_base`` and add a test-sized ``_tiny``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.decoder import UNETRDecoder
from ..layers.swin import SwinEncoder3D
from ._registry import register_model
from ._sizes import SizeRule

PAPER = "Liu et al. 2025, Swin-X2S (biplanar X-ray to 3D segmentation)"
VIEWS = ("coronal", "sagittal")


class DimensionExpansion(nn.Module):
    """``(B, c, h, w)`` -> ``(B, c, x, y, z)``: ``Conv3d(1 -> depth, 1x1x1)`` creates the axis a view lacks.

    Initialised to weight 1 and bias 0, it copies each pixel along its ray (the back-projection of a
    parallel X-ray); training lets every depth position weigh the pixel differently.
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.conv = nn.Conv3d(1, depth, kernel_size=1)
        nn.init.ones_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, view: str) -> torch.Tensor:
        """Coronal ``(h, w) = (x, z)`` -> new axis at ``y``; sagittal ``(h, w) = (y, z)`` -> new axis at ``x``."""
        y = self.conv(x.unsqueeze(1))  # (B, depth, c, h, w)
        if view == "coronal":
            return y.permute(0, 2, 3, 1, 4)  # (B, c, h=x, depth=y, w=z)
        if view == "sagittal":
            return y.permute(0, 2, 1, 3, 4)  # (B, c, depth=x, h=y, w=z)
        raise ValueError(f"view must be 'coronal' or 'sagittal', got {view!r}")


class CrossViewAttention(nn.Module):
    """Bottleneck exchange between the views: each view's tokens attend to the other view's.

    ``forward(a, b)`` with ``a``, ``b`` ``(B, C, X, Y, Z)`` returns the new ``(a', b')``; no
    residual, no MLP (as specified), shared weights for both directions.
    """

    def __init__(self, channels: int, heads: int, tokens: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} are not divisible by heads {heads}")
        self.heads = heads
        self.proj_in = nn.Conv3d(channels, channels, kernel_size=1)
        self.pos = nn.Parameter(torch.zeros(1, tokens, channels))
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        self.final_norm = nn.LayerNorm(channels, eps=1e-6)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        z = self.proj_in(x).flatten(2).transpose(1, 2)  # (B, N, C)
        if z.shape[1] != self.pos.shape[1]:
            raise ValueError(f"bottleneck has {z.shape[1]} tokens, the position embedding {self.pos.shape[1]}")
        return self.norm(z + self.pos)

    def _attend(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = query.shape
        d = c // self.heads
        q = self.q(query).view(b, n, self.heads, d).transpose(1, 2)
        k = self.k(context).view(b, -1, self.heads, d).transpose(1, 2)
        v = self.v(context).view(b, -1, self.heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.final_norm(self.out(out))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, *S)`` bottlenecks of both views -> their attended versions, same shapes."""
        za, zb = self._tokens(a), self._tokens(b)
        new_a = self._attend(za, zb).transpose(1, 2).reshape(a.shape)
        new_b = self._attend(zb, za).transpose(1, 2).reshape(b.shape)
        return new_a, new_b


class SwinX2S(nn.Module):
    """Biplanar X-rays -> 3D logits (see the module docstring).

    Args:
        in_channels: channels of each view (1 for X-rays).
        out_channels: classes of the 3D label.
        img_size: ``(H, W)`` of both views; the output volume is ``(H, H, W)``. Multiples of 32.
        feature_size / depths / num_heads / window_size: the 2D Swin encoder.
        drop_path_rate: stochastic depth of the encoder.
        use_checkpoint: gradient checkpointing of the Swin stages.

    ``forward(coronal, sagittal)``: two ``(B, in, H, W)`` tensors.  Registered with ``kind="biplanar"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: Sequence[int] = (128, 160),
        feature_size: int = 32,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        window_size: int = 7,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        h, w = (int(s) for s in img_size)
        if h % 32 or w % 32:
            raise ValueError(f"img_size {tuple(img_size)} must be multiples of 32 (five halvings)")
        self.in_channels, self.out_channels, self.img_size = in_channels, out_channels, (h, w)
        self.size_rule = SizeRule(
            "Swin-X2S",
            (h, w),
            fixed=(h, w),
            inputs="views",
            note="make the DRRs with that detector size or build the model with img_size=...",
        )
        self.config: dict[str, Any] = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            img_size=(h, w),
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
        )
        self.encoder = SwinEncoder3D(
            in_channels,
            feature_size,
            depths,
            num_heads,
            window_size=(window_size,) * 2,
            patch_size=(2, 2),
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
        )
        channels = self.encoder.out_channels  # [F, 2F, 4F, 8F, 16F] at /2 ... /32
        self.expansions = nn.ModuleList(DimensionExpansion(h // 2**i) for i in range(6))  # input level + 5
        tokens = (h // 32) * (h // 32) * (w // 32)
        self.cross_attention = CrossViewAttention(channels[4], num_heads[3], tokens)
        self.decoder = UNETRDecoder(in_channels, channels, out_channels)
        self.deep_supervision_weights = None

    @property
    def size_divisor(self) -> int:
        """Both view sizes must be multiples of 32 (five halvings); the model takes exactly ``img_size``."""
        return 32

    def _view(self, x: torch.Tensor, view: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.encoder(x)
        x3 = self.expansions[0](x, view)
        return x3, [self.expansions[i + 1](f, view) for i, f in enumerate(feats)]

    def forward(self, coronal: torch.Tensor, sagittal: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Two views ``(B, in, H, W)`` -> ``(B, out, H, H, W)`` (eval) or one volume per view (training)."""
        for name, t in (("coronal", coronal), ("sagittal", sagittal)):
            if t.dim() != 4 or t.shape[1] != self.in_channels:
                raise ValueError(f"{name} view must be (B, {self.in_channels}, H, W), got {tuple(t.shape)}")
            if not torch.jit.is_tracing():
                self.size_rule.check(t.shape[2:])
        xc, fc = self._view(coronal, "coronal")
        xs, fs = self._view(sagittal, "sagittal")
        bc, bs = self.cross_attention(self.decoder.bottleneck(fc[4]), self.decoder.bottleneck(fs[4]))
        out_c = self.decoder.decode(bc, xc, fc)
        out_s = self.decoder.decode(bs, xs, fs)
        if self.training:
            return {"coronal": out_c, "sagittal": out_s}
        return (out_c + out_s) / 2


@register_model(SwinX2S, default_roi=(64, 64, 64), paper=PAPER, kind="biplanar")
def swin_x2s_tiny() -> dict[str, Any]:
    """Test-sized Swin-X2S: F=12, depths (1,1,1,1), views 64x64 (3.8M parameters for 1 -> 5 classes)."""
    return dict(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), img_size=(64, 64))


@register_model(SwinX2S, default_roi=(128, 128, 160), paper=PAPER, kind="biplanar")
def swin_x2s_small() -> dict[str, Any]:
    """The paper's Swin-X2S-T: F=32, depths (2,2,6,2), heads (1,2,4,8), views 128x160 (29.0M for 1 -> 5)."""
    return dict(feature_size=32, depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8))


@register_model(SwinX2S, default_roi=(128, 128, 160), paper=PAPER, kind="biplanar")
def swin_x2s_base() -> dict[str, Any]:
    """The paper's Swin-X2S-S: F=64, depths (2,2,6,2), heads (2,4,8,16), views 128x160 (115.9M for 1 -> 5)."""
    return dict(feature_size=64, depths=(2, 2, 6, 2), num_heads=(2, 4, 8, 16))
