"""DS-TransUNet in 3D (Lin et al., "DS-TransUNet: Dual Swin Transformer U-Net for Medical Image
Segmentation", IEEE TIM 2022, arXiv:2106.06716), on medswin's shared Swin core.

The paper is 2D.  Its public repository carries no licence, so nothing of it was read or copied:
this is an independent implementation from the paper and our design document.

Architecture (``x`` of size ``S``; ``C`` = ``feature_size``, ``C_s`` = ``coarse_feature_size``):

* two Swin encoders see the same volume, both returning the classic Swin pyramid (each stage's
  output before its patch merging, through a learned LayerNorm; see
  :class:`~medswin.layers.swin.SwinEncoder3D` with ``out_layout="swin"``): the fine stream
  (patch 4) gives ``e_i`` at ``S / (4 * 2^(i-1))`` with ``C * 2^(i-1)`` channels, the coarse stream
  (patch 8) ``r_i`` at half that resolution with ``C_s * 2^(i-1)`` channels;
* a Transformer Interactive Fusion (:class:`TransformerInteractiveFusion`) per stage: each stream
  gets the other's global token (mean of its LayerNormed tokens, projected) prepended, passes
  one pre-norm transformer layer with *global* attention, drops the token again; then
  ``f_i = ConvBlock([e'_i, up(r'_i)])`` with ``C * 2^(i-1)`` channels;
* three Swin decoder stages (:class:`SwinDecoderStage`) ``(f4, f3) -> d1, (d1, f2) -> d2,
  (d2, f1) -> d3``, then a convolutional stem path back to full resolution
  (``ds1`` = Conv1x1 of the input, ``ds2`` = MaxPool + ConvBlock of ``ds1``) and a 1x1 head;
* deep supervision in training: ``aux1`` from ``f4`` and ``aux2`` from ``d3`` (1x1 conv, then
  trilinear upsampling to full size), weighted 0.6 / 0.2 / 0.2 with the main output.

What changed for 3D, against the 2D paper:

* patch sizes 4 and 8 are cubes (4^3 and 8^3); a coarse stage therefore has 1/8 of the fine
  stage's tokens (``N_e = 8 N_r``, 4 in 2D);
* the fusion attention is global over every token of a stream, as in the paper, computed with
  ``torch.nn.functional.scaled_dot_product_attention`` (flash kernels on CPU and CUDA), so the
  ``N x N`` attention matrix is never materialised (stage 1 at 96^3 attends over 24^3 + 1 =
  13825 fine tokens);
* GroupNorm instead of BatchNorm (3D batches are tiny), with as many groups as possible up to 32
  (the largest divisor of the channel count that is <= 32);
* input sizes: the fine stream needs multiples of 32, the coarse one multiples of 64 for exact
  half-resolution maps at every stage.  :attr:`DSTransUNet.size_divisor` is 32: on an axis that is
  an odd multiple of 32 the coarse stage-4 map is not half the fine one (the coarse patch merging
  rounds up), and ``r'_4`` is resized to ``e'_4``'s size with nearest interpolation instead of the
  x2 nearest upsampling;
* presets: the paper's B size in 3D (``DSTransUNet`` defaults: ``C = 128`` with depths
  (2, 2, 18, 2), ``C_s = 96`` with (2, 2, 6, 2)) has 265M parameters (108M of them in the 3x3x3
  TIF convolutions, 90M in the fine encoder); the registered presets are smaller (see below) and
  use window 7 (4 for ``tiny``);
* no ReLU on the auxiliary logits (a ReLU there would clip the logits a softmax loss needs).

Details the design leaves open, as chosen here: convolutions followed by a GroupNorm have no
bias, the others do; the decoder stages at ``4C, 2C, C`` channels use the fine stream's heads of
stages 3, 2, 1; the two convolutions of ``d4`` and ``d5`` (after the x2 upsampling, and after the
concatenation with ``ds2`` / ``ds1``) are Conv3x3x3 + GN + ReLU; ``ds1`` is a plain 1x1
convolution (no norm or activation); the stem widths 32/64 are ``stem_channels``.

Presets (parameters for 1 -> 14 channels):

* ``ds_transunet_tiny`` (tests): C 24 / C_s 24, depths 1-1-1-1 both, window 4, stem 16/32: 7.62M;
* ``ds_transunet_small``: C 32 / C_s 24, depths (2, 2, 4, 2) / (2, 2, 2, 2), window 7: 14.65M;
* ``ds_transunet_base``: C 48 / C_s 36, depths (2, 2, 6, 2) / (2, 2, 2, 2), window 7: 32.47M.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.conv import ChannelsLastConv3d, to_channels_last
from ..layers.helpers import to_3tuple
from ..layers.swin import Mlp, SwinBlock3D, SwinEncoder3D, map_to_tokens, tokens_to_map
from ._registry import register_model
from ._sizes import SizeRule

PAPER = "Lin et al. 2021, DS-TransUNet (arXiv:2106.06716)"


def group_norm_groups(channels: int, max_groups: int = 32) -> int:
    """The largest divisor of ``channels`` that is <= ``max_groups`` (24 -> 24, 40 -> 20, 96 -> 32)."""
    return max(g for g in range(1, min(channels, max_groups) + 1) if channels % g == 0)


class ConvGNReLU(nn.Module):
    """``ReLU(GroupNorm(Conv3d(x)))`` (bias-free convolution, channels-last), ``(B, in, *S)`` -> ``(B, out, *S)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = ChannelsLastConv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(group_norm_groups(out_channels), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S)`` -> ``(B, out, *S)``."""
        return F.relu(self.norm(self.conv(x)), inplace=True)


class ConvBlock(nn.Module):
    """``(Conv3x3x3 + GroupNorm + ReLU) x 2``: ``(B, in, *S)`` -> ``(B, out, *S)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvGNReLU(in_channels, out_channels)
        self.conv2 = ConvGNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *S)`` -> ``(B, out, *S)``."""
        return self.conv2(self.conv1(x))


def _conv_with_bias(in_channels: int, out_channels: int, kernel_size: int) -> ChannelsLastConv3d:
    """A convolution with bias, for convolutions not followed by a norm (the caller adds any ReLU)."""
    return ChannelsLastConv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True)


def _resize_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest upsampling of ``(B, C, *s)`` to ``size``: exactly x2 when ``size == 2 s``, else a resize."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if all(t == 2 * s for s, t in zip(x.shape[2:], size)):
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.interpolate(x, size=size, mode="nearest")


# ---------------------------------------------------------------------------------------------
# Transformer Interactive Fusion
# ---------------------------------------------------------------------------------------------


class GlobalTransformerLayer(nn.Module):
    """One pre-norm transformer layer with global multi-head attention over the whole sequence.

    ``x = x + Attn(LN(x)); x = x + FF(LN(x))`` with ``Attn`` = bias-free qkv Linear
    (``dim -> 3 * heads * head_dim``), SDPA over all tokens, output Linear back to ``dim``, and
    ``FF`` = Linear -> GELU -> Linear with ``mlp_dim`` hidden units.  Attention goes through
    ``torch.nn.functional.scaled_dot_product_attention`` without a mask (flash kernels): no
    ``N x N`` tensor is materialised.  ``(B, N, dim)`` -> ``(B, N, dim)``.
    """

    def __init__(
        self, dim: int, num_heads: int, head_dim: int, mlp_dim: int, drop: float = 0.0, attn_drop: float = 0.0
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.attn_drop = attn_drop
        inner = num_heads * head_dim
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_dim, drop)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Global multi-head self-attention (no norm, no residual): ``(B, N, dim)`` -> ``(B, N, dim)``."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # (B, heads, N, head_dim)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim)`` -> ``(B, N, dim)``."""
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerInteractiveFusion(nn.Module):
    """Transformer Interactive Fusion (TIF) of one stage: fine tokens ``e`` and coarse tokens ``r``.

    ``g_e = Linear(C_l -> C_s)(mean(LN(e)))``, ``g_r = Linear(C_s -> C_l)(mean(LN(r)))``;
    ``r' = T_s([g_e; r])[1:]``, ``e' = T_l([g_r; e])[1:]`` (global token prepended, then dropped);
    ``f = ConvBlock([e', up(r')])`` with ``C_l`` channels, where ``up`` is x2 nearest upsampling,
    or a nearest resize to ``e``'s grid when ``r``'s grid is not exactly half of it.

    Args:
        fine_dim / coarse_dim: ``C_l`` and ``C_s`` of this stage.
        num_heads / head_dim / mlp_dim: of ``(T_s, T_l)``; the paper's (3, 1) / (32, 64) / (128, 256).
    """

    def __init__(
        self,
        fine_dim: int,
        coarse_dim: int,
        num_heads: Sequence[int] = (3, 1),
        head_dim: Sequence[int] = (32, 64),
        mlp_dim: Sequence[int] = (128, 256),
        drop: float = 0.0,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm_fine = nn.LayerNorm(fine_dim)
        self.norm_coarse = nn.LayerNorm(coarse_dim)
        self.fine_to_coarse = nn.Linear(fine_dim, coarse_dim)  # g_e
        self.coarse_to_fine = nn.Linear(coarse_dim, fine_dim)  # g_r
        self.t_s = GlobalTransformerLayer(coarse_dim, num_heads[0], head_dim[0], mlp_dim[0], drop, attn_drop)
        self.t_l = GlobalTransformerLayer(fine_dim, num_heads[1], head_dim[1], mlp_dim[1], drop, attn_drop)
        self.conv = ConvBlock(fine_dim + coarse_dim, fine_dim)

    def global_tokens(self, e: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g_e, g_r)`` of shapes ``(B, 1, C_s)`` and ``(B, 1, C_l)`` from tokens ``(B, *grid, C)``."""
        b = e.shape[0]
        g_e = self.fine_to_coarse(self.norm_fine(e.reshape(b, -1, e.shape[-1])).mean(1, keepdim=True))
        g_r = self.coarse_to_fine(self.norm_coarse(r.reshape(b, -1, r.shape[-1])).mean(1, keepdim=True))
        return g_e, g_r

    def fuse_tokens(self, e: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``e`` ``(B, *grid_e, C_l)`` and ``r`` ``(B, *grid_r, C_s)`` -> ``(e', r')``, same shapes."""
        b = e.shape[0]
        g_e, g_r = self.global_tokens(e, r)
        r_new = self.t_s(torch.cat([g_e, r.reshape(b, -1, r.shape[-1])], 1))[:, 1:]
        e_new = self.t_l(torch.cat([g_r, e.reshape(b, -1, e.shape[-1])], 1))[:, 1:]
        return e_new.reshape(e.shape), r_new.reshape(r.shape)

    def forward(self, e: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Tokens ``e`` ``(B, *grid_e, C_l)``, ``r`` ``(B, *grid_r, C_s)`` -> fused map ``(B, C_l, *grid_e)``."""
        e_new, r_new = self.fuse_tokens(e, r)
        e_map = tokens_to_map(e_new)
        r_map = _resize_nearest(tokens_to_map(r_new), e_map.shape[2:])
        return self.conv(torch.cat([e_map, r_map], 1))


class DualSwinEncoder(nn.Module):
    """Fine (patch 4) and coarse (patch 8) Swin encoders fused stage by stage with TIF.

    ``forward(x)`` returns ``[f1, f2, f3, f4]``, ``f_i`` of shape ``(B, C * 2^(i-1), *S / r_i)``
    with :attr:`reductions` ``r = [4, 8, 16, 32]`` and :attr:`out_channels` ``[C, 2C, 4C, 8C]``.
    :meth:`forward_streams` gives the two encoders' token pyramids before fusion.
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: int,
        coarse_feature_size: int,
        depths: Sequence[int],
        coarse_depths: Sequence[int],
        num_heads: Sequence[int],
        coarse_num_heads: Sequence[int],
        window_size: Sequence[int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        fusion_heads: Sequence[int] = (3, 1),
        fusion_head_dim: Sequence[int] = (32, 64),
        fusion_mlp_dim: Sequence[int] = (128, 256),
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        common = dict(
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
            out_layout="swin",
        )
        self.fine = SwinEncoder3D(in_channels, feature_size, depths, num_heads, patch_size=(4, 4, 4), **common)
        self.coarse = SwinEncoder3D(
            in_channels, coarse_feature_size, coarse_depths, coarse_num_heads, patch_size=(8, 8, 8), **common
        )
        self.fusions = nn.ModuleList(
            TransformerInteractiveFusion(
                cl, cs, fusion_heads, fusion_head_dim, fusion_mlp_dim, drop=drop_rate, attn_drop=attn_drop_rate
            )
            for cl, cs in zip(self.fine.out_channels, self.coarse.out_channels)
        )
        self.out_channels: list[int] = list(self.fine.out_channels)
        self.reductions: list[int] = list(self.fine.reductions)

    def token_embeddings(self) -> list[nn.Module]:
        """The modules whose outputs are the image tokens (SimMIM masks them; see :mod:`medswin.ssl.masking`):
        the fine (patch 4) and the coarse (patch 8) patch embeddings."""
        return [*self.fine.token_embeddings(), *self.coarse.token_embeddings()]

    def forward_streams(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(B, in, *S)`` -> (fine tokens ``e_i``, coarse tokens ``r_i``), each ``(B, *grid_i, C_i)``."""
        fine = self.fine.forward_pyramid_tokens(self.fine.embed(x))
        coarse = self.coarse.forward_pyramid_tokens(self.coarse.embed(x))
        return fine, coarse

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in, *S)`` -> fused features ``[f1, f2, f3, f4]`` (channels-last ``(B, C_i, *S / r_i)``)."""
        fine, coarse = self.forward_streams(x)
        return [fusion(e, r) for fusion, e, r in zip(self.fusions, fine, coarse)]


# ---------------------------------------------------------------------------------------------
# decoder
# ---------------------------------------------------------------------------------------------


class SwinDecoderStage(nn.Module):
    """Swin decoder stage: deep input ``(B, C, *s)`` and skip ``(B, C/2, *2s)`` -> ``(B, C/2, *2s)``.

    Deep path: x2 nearest upsampling, Conv3 ``C -> C/2`` + GN + ReLU, two Swin blocks at ``C/2``
    (regular then shifted windows), Conv1x1 ``C/2 -> C/4`` + ReLU.  Skip path: Conv1x1
    ``C/2 -> C/4`` + ReLU.  Concatenate (``C/2``), Conv3 ``C/2 -> C/2`` + ReLU.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        window_size: Sequence[int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"decoder stage channels {channels} must be divisible by 4")
        half, quarter = channels // 2, channels // 4
        shift = tuple(w // 2 for w in window_size)
        self.up_conv = ConvGNReLU(channels, half)
        self.blocks = nn.ModuleList(
            SwinBlock3D(half, num_heads, window_size, s, mlp_ratio, qkv_bias, drop, attn_drop)
            for s in ((0,) * len(window_size), shift)
        )
        self.deep_proj = _conv_with_bias(half, quarter, 1)
        self.skip_proj = _conv_with_bias(half, quarter, 1)
        self.fuse = _conv_with_bias(half, half, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, *s)``, ``skip`` ``(B, C/2, *2s)`` -> ``(B, C/2, *2s)``."""
        h = self.up_conv(_resize_nearest(to_channels_last(x), skip.shape[2:]))
        t = map_to_tokens(h)
        for block in self.blocks:
            t = block(t)
        h = F.relu(self.deep_proj(tokens_to_map(t)), inplace=True)
        s = F.relu(self.skip_proj(skip), inplace=True)
        return F.relu(self.fuse(torch.cat([h, s], 1)), inplace=True)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------


class DSTransUNet(nn.Module):
    """DS-TransUNet (3D): dual Swin encoders + TIF fusion + Swin decoder, ``(B, in, D, H, W)`` -> ``(B, out, D, H, W)``.

    Args:
        in_channels / out_channels: input channels and output classes.
        feature_size: ``C_l``, channels of the fine stream's first stage (patch 4); paper B: 128.
        coarse_feature_size: ``C_s``, channels of the coarse stream's first stage (patch 8); paper B: 96.
        depths / num_heads: Swin blocks and heads per stage of the fine stream (paper B:
            (2, 2, 18, 2) / (4, 8, 16, 32)); the decoder stages at ``4C, 2C, C`` channels use
            ``num_heads[2], num_heads[1], num_heads[0]``.
        coarse_depths / coarse_num_heads: the same for the coarse stream (paper B: (2, 2, 6, 2) /
            (3, 6, 12, 24)).
        window_size: Swin attention window of both encoders and the decoder (7).
        fusion_heads / fusion_head_dim / fusion_mlp_dim: the TIF transformers ``(T_s, T_l)``:
            (3, 1) heads of (32, 64) dims, feed-forward (128, 256) (the paper's values).
        stem_channels: widths of the full-resolution and /2 convolutional skips (32, 64).
        mlp_ratio / qkv_bias / drop_rate / attn_drop_rate / drop_path_rate: Swin block options.
        use_checkpoint: gradient checkpointing of the encoders' Swin blocks.

    In training mode ``forward`` returns ``{"out", "aux1", "aux2"}`` logits, all at full
    resolution (``aux1`` from ``f4``, ``aux2`` from ``d3``, trilinearly upsampled), weighted by
    :attr:`deep_supervision_weights`; in eval mode only the ``out`` tensor.

    Sizes: every axis must be a multiple of :attr:`size_divisor` = 32 (the fine stream's total
    reduction).  The coarse stream (patch 8, four stages) reduces by 64: on axes that are
    multiples of 64 each coarse map is exactly half the fine map of its stage; on an odd multiple
    of 32 (e.g. 96) the coarse stage-4 map is rounded up by the patch merging (``96 / 64 -> 2``
    against the fine ``3``) and ``r'_4`` is resized to ``e'_4``'s grid with nearest interpolation
    instead of the x2 nearest upsampling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 128,
        coarse_feature_size: int = 96,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        coarse_depths: Sequence[int] = (2, 2, 6, 2),
        coarse_num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        fusion_heads: Sequence[int] = (3, 1),
        fusion_head_dim: Sequence[int] = (32, 64),
        fusion_mlp_dim: Sequence[int] = (128, 256),
        stem_channels: Sequence[int] = (32, 64),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        rates = {"drop_rate": drop_rate, "attn_drop_rate": attn_drop_rate, "drop_path_rate": drop_path_rate}
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        for prefix, c, d, heads in (
            ("", feature_size, depths, num_heads),
            ("coarse_", coarse_feature_size, coarse_depths, coarse_num_heads),
        ):
            if len(d) != 4 or len(heads) != 4:
                raise ValueError(
                    f"DS-TransUNet has 4 stages per stream: {prefix}depths={tuple(d)}, {prefix}num_heads={tuple(heads)}"
                )
            for i, h in enumerate(heads):
                if (c * 2**i) % h:
                    raise ValueError(f"{prefix}feature_size {c} x 2^{i} is not divisible by {prefix}num_heads[{i}]={h}")
        if len(stem_channels) != 2:
            raise ValueError(f"stem_channels needs 2 widths (full resolution, /2), got {tuple(stem_channels)}")
        window = to_3tuple(window_size)
        self.config: dict[str, Any] = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=feature_size,
            coarse_feature_size=coarse_feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            coarse_depths=tuple(coarse_depths),
            coarse_num_heads=tuple(coarse_num_heads),
            window_size=window,
            fusion_heads=tuple(fusion_heads),
            fusion_head_dim=tuple(fusion_head_dim),
            fusion_mlp_dim=tuple(fusion_mlp_dim),
            stem_channels=tuple(stem_channels),
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.size_rule = SizeRule(
            "DS-TransUNet",
            (32, 32, 32),
            note="the fine Swin stream (patch 4, four stages) reduces by 32; multiples of 64 also give the coarse "
            "stream (patch 8) exact half-resolution maps, other multiples of 32 (e.g. 96) work through a resized "
            "coarse stage-4 map",
        )
        self.deep_supervision_weights = {"out": 0.6, "aux1": 0.2, "aux2": 0.2}
        self.encoder = DualSwinEncoder(
            in_channels,
            feature_size,
            coarse_feature_size,
            depths,
            coarse_depths,
            num_heads,
            coarse_num_heads,
            window,
            mlp_ratio,
            qkv_bias,
            drop_rate,
            attn_drop_rate,
            drop_path_rate,
            fusion_heads,
            fusion_head_dim,
            fusion_mlp_dim,
            use_checkpoint,
        )
        c = self.encoder.out_channels  # [C, 2C, 4C, 8C]
        # (f4, f3) -> d1 (4C), (d1, f2) -> d2 (2C), (d2, f1) -> d3 (C)
        self.decoder_stages = nn.ModuleList(
            SwinDecoderStage(c[3 - i], num_heads[2 - i], window, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate)
            for i in range(3)
        )
        s1, s2 = (int(s) for s in stem_channels)
        self.stem1 = _conv_with_bias(in_channels, s1, 1)  # ds1: a plain 1x1 conv at full resolution
        self.stem2 = ConvBlock(s1, s2)  # ds2: after 2x max pooling
        self.up4 = ConvGNReLU(c[0], s2)
        self.fuse4 = ConvGNReLU(2 * s2, s2)
        self.up5 = ConvGNReLU(s2, s1)
        self.fuse5 = ConvGNReLU(2 * s1, s1)
        self.head = _conv_with_bias(s1, out_channels, 1)
        self.aux_head1 = _conv_with_bias(c[3], out_channels, 1)
        self.aux_head2 = _conv_with_bias(c[0], out_channels, 1)

    @property
    def size_divisor(self) -> int:
        """Every spatial size of the input must be a multiple of 32."""
        return 32

    def decode(self, x: torch.Tensor, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ``x`` and fused features ``[f1..f4]`` -> (full-resolution logits, ``d3``)."""
        f1, f2, f3, f4 = feats
        d = self.decoder_stages[0](f4, f3)
        d = self.decoder_stages[1](d, f2)
        d3 = self.decoder_stages[2](d, f1)
        ds1 = self.stem1(x)
        ds2 = self.stem2(F.max_pool3d(ds1, 2))
        d = self.fuse4(torch.cat([self.up4(_resize_nearest(d3, ds2.shape[2:])), ds2], 1))
        d = self.fuse5(torch.cat([self.up5(_resize_nearest(d, ds1.shape[2:])), ds1], 1))
        return self.head(d), d3

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """``(B, in, D, H, W)`` -> logits ``(B, out, D, H, W)``; in training a dict ``{"out", "aux1", "aux2"}``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        if not torch.jit.is_tracing():
            self.size_rule.check(x.shape[2:])
        feats = self.encoder(x)
        out, d3 = self.decode(x, feats)
        if not self.training:
            return out
        size = x.shape[2:]
        aux1 = F.interpolate(self.aux_head1(feats[3]), size=size, mode="trilinear", align_corners=False)
        aux2 = F.interpolate(self.aux_head2(d3), size=size, mode="trilinear", align_corners=False)
        return {"out": out, "aux1": aux1, "aux2": aux2}


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------


@register_model(DSTransUNet, default_roi=(96, 96, 96), paper=PAPER)
def ds_transunet_tiny() -> dict[str, Any]:
    """DS-TransUNet for tests: C 24 / C_s 24, one block per stage, window 4, stem widths 16/32.

    (7.62M parameters for 1 -> 14 channels; most of them in the 3x3x3 fusion convolutions of stage 4.)
    """
    return dict(
        feature_size=24,
        coarse_feature_size=24,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 4, 8),
        coarse_depths=(1, 1, 1, 1),
        coarse_num_heads=(1, 2, 4, 8),
        window_size=4,
        stem_channels=(16, 32),
    )


@register_model(DSTransUNet, default_roi=(96, 96, 96), paper=PAPER)
def ds_transunet_small() -> dict[str, Any]:
    """DS-TransUNet, C 32 / C_s 24 (the paper's 4:3), depths (2, 2, 4, 2) / (2, 2, 2, 2), window 7.

    (14.65M parameters for 1 -> 14 channels.)  Two thirds of ``base``'s widths, heads of 16 / 12
    channels, two blocks less in the fine stage 3; the stem keeps 32/64.
    """
    return dict(
        feature_size=32,
        coarse_feature_size=24,
        depths=(2, 2, 4, 2),
        num_heads=(2, 4, 8, 16),
        coarse_depths=(2, 2, 2, 2),
        coarse_num_heads=(2, 4, 8, 16),
        window_size=7,
    )


@register_model(DSTransUNet, default_roi=(96, 96, 96), paper=PAPER)
def ds_transunet_base() -> dict[str, Any]:
    """DS-TransUNet, C 48 / C_s 36 (the paper's 4:3), depths (2, 2, 6, 2) / (2, 2, 2, 2), window 7.

    (32.47M parameters for 1 -> 14 channels.)  The fine stream has Swin UNETR base's widths
    (48 ... 384, heads of 16 channels) with Swin-T's depths, the coarse stream two blocks per
    stage (heads of 12 channels).  Almost half of the parameters (15.7M) sit in the four TIF
    ConvBlocks, whose 3x3x3 convolutions grow with the square of the width (27x in 3D, 9x in 2D):
    the paper's B widths (C 128 / C_s 96, depths (2, 2, 18, 2)) would give 265M parameters in 3D.
    Swin UNETR base has 62.2M for comparison.
    """
    return dict(
        feature_size=48,
        coarse_feature_size=36,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        coarse_depths=(2, 2, 2, 2),
        coarse_num_heads=(3, 6, 12, 24),
        window_size=7,
    )
