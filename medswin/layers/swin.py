"""Swin transformer building blocks and the hierarchical Swin encoder (3D, and 2D for Swin-X2S).

Tokens travel channels-last, ``(B, *grid, C)``, the layout Linear/LayerNorm want; stage outputs
are handed out as ``(B, C, *grid)`` tensors in ``channels_last(_3d)`` memory format, which is the
same memory viewed differently, so no transposing copies are made between the encoder and a
convolutional decoder.  Parameter names follow MONAI's ``SwinTransformer`` within each block so the
state-dict mapping in :mod:`medswin.models.swin_unetr` is a renaming of prefixes only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import WindowAttention3D
from .conv import ResConvBlock
from .window import get_window_layout


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format for 2D or 3D feature maps."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def tokens_to_map(tokens: torch.Tensor) -> torch.Tensor:
    """``(B, *grid, C)`` tokens -> ``(B, C, *grid)`` view (channels-last memory, no copy)."""
    nd = tokens.dim() - 2
    return tokens.permute(0, nd + 1, *range(1, nd + 1))


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, *grid)`` -> contiguous ``(B, *grid, C)`` tokens (a view when already channels-last)."""
    nd = x.dim() - 2
    return x.permute(0, *range(2, nd + 2), 1).contiguous()


class Mlp(nn.Module):
    """Transformer feed-forward: Linear(C, hidden) -> GELU -> dropout -> Linear(hidden, C) -> dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., C)`` -> ``(..., C)``."""
        return self.drop(self.linear2(self.drop(F.gelu(self.linear1(x)))))


class SwinBlock3D(nn.Module):
    """One Swin transformer block on channels-last tokens ``(B, *grid, C)`` (2D or 3D grids).

    V1 (pre-norm):  ``x + DropPath(WMSA(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``.
    V2 (res-post-norm): ``x + DropPath(LN(WMSA(x)))`` then ``x + DropPath(LN(MLP(x)))``.
    ``shift_size`` of zeros gives a regular window block; the usual choice alternates zeros and
    ``window // 2``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attn_version: str = "v1",
    ) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(shift_size)
        self.attn_version = attn_version
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, num_heads, self.window_size, qkv_bias, attn_drop, drop, attn_version)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *grid, C)`` -> ``(B, *grid, C)``."""
        layout = get_window_layout(x.shape[0], x.shape[1:-1], self.window_size, self.shift_size, x.device)
        if self.attn_version == "v1":
            h = layout.from_windows(self.attn(layout.to_windows(self.norm1(x)), layout))
            x = x + self.drop_path(h)
            return x + self.drop_path(self.mlp(self.norm2(x)))
        h = layout.from_windows(self.attn(layout.to_windows(x), layout))
        x = x + self.drop_path(self.norm1(h))
        return x + self.drop_path(self.norm2(self.mlp(x)))


# MONAI's concatenation order of the 2x2x2 (2x2) cell in PatchMerging, as (d, h, w) / (h, w) offsets
_MERGE_ORDER = {
    3: ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)),
    2: tuple((j, i) for i, j in itertools.product(range(2), range(2))),
}


class PatchMerging3D(nn.Module):
    """Halve the grid and double the channels: ``(B, *grid, C)`` -> ``(B, *ceil(grid/2), 2C)``.

    The ``2^nd`` tokens of each cell are concatenated (MONAI's order; odd sizes are zero-padded)
    and then reduced: V1 ``Linear(LN(x), 2C, bias=False)`` over ``2^nd C`` channels, V2 (Swin V2's
    merge-then-norm) ``LN(Linear(x))`` over ``2C``.
    """

    def __init__(self, dim: int, spatial_dims: int = 3, version: str = "v1") -> None:
        super().__init__()
        self.spatial_dims, self.version = spatial_dims, version
        cat_dim = (2**spatial_dims) * dim
        self.reduction = nn.Linear(cat_dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(cat_dim if version == "v1" else 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *grid, C)`` -> ``(B, *ceil(grid / 2), 2C)``."""
        grid = x.shape[1:-1]
        if any(g % 2 for g in grid):
            pads = [0, 0]
            for g in reversed(grid):
                pads += [0, g % 2]
            x = F.pad(x, pads)
        parts = [x[(slice(None), *(slice(o, None, 2) for o in off))] for off in _MERGE_ORDER[self.spatial_dims]]
        x = torch.cat(parts, -1)
        if self.version == "v1":
            return self.reduction(self.norm(x))
        return self.norm(self.reduction(x))


class SwinStage3D(nn.Module):
    """A stage: optional residual conv block (MONAI SwinUNETR-V2), ``depth`` Swin blocks with
    alternating shifts, then optional patch merging.  Tokens ``(B, *grid, C)`` in and out."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        drop_path: Sequence[float],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        attn_version: str = "v1",
        downsample: bool = True,
        conv_block: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        spatial_dims = len(window_size)
        shift = tuple(w // 2 for w in window_size)
        no_shift = tuple(0 for _ in window_size)
        self.use_checkpoint = use_checkpoint
        self.conv_block = ResConvBlock(dim, dim, spatial_dims=spatial_dims) if conv_block else None
        self.blocks = nn.ModuleList(
            SwinBlock3D(
                dim,
                num_heads,
                window_size,
                no_shift if i % 2 == 0 else shift,
                mlp_ratio,
                qkv_bias,
                drop,
                attn_drop,
                drop_path[i],
                attn_version,
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging3D(dim, spatial_dims, attn_version) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *grid, C)`` -> ``(B, *grid', C')`` (halved grid and doubled channels if merging)."""
        x = self.forward_blocks(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The stage without its patch merging: ``(B, *grid, C)`` -> ``(B, *grid, C)``."""
        if self.conv_block is not None:
            x = map_to_tokens(self.conv_block(tokens_to_map(x)))
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding ``Conv(in, C, k=p, s=p)``; input zero-padded to a multiple of ``p``."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: Sequence[int]) -> None:
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.embed_dim = embed_dim
        conv = nn.Conv3d if len(self.patch_size) == 3 else nn.Conv2d
        self.proj = conv(in_channels, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *spatial)`` -> tokens ``(B, *spatial / p, C)``."""
        spatial = x.shape[2:]
        pads: list[int] = []
        for s, p in reversed(list(zip(spatial, self.patch_size))):
            pads += [0, (p - s % p) % p]
        if any(pads):
            x = F.pad(x, pads)
        x = x.contiguous(memory_format=channels_last_format(len(spatial)))
        return map_to_tokens(self.proj(x))


class SwinEncoder3D(nn.Module):
    """Hierarchical Swin encoder returning multi-scale feature maps, in one of two layouts.

    ``out_layout="monai"`` (default): ``forward(x)`` with ``x`` of shape ``(B, in_channels, *spatial)``
    returns 5 maps ``[f0, f1, f2, f3, f4]`` with ``f_i`` of shape ``(B, C * 2^i, *spatial / (p * 2^i))``:
    the patch embedding and the output of each stage after its patch merging (MONAI
    ``SwinTransformer`` semantics).  With ``normalize=True`` each feature gets a parameter-free
    LayerNorm over channels.

    ``out_layout="swin"`` (the classic Swin feature pyramid, e.g. DS-TransUNet): returns one map per
    stage, ``f_i`` (``i = 0..n-1``) of shape ``(B, C * 2^i, *spatial / (p * 2^i))``, the output of
    stage ``i`` *before* its patch merging, through a learned LayerNorm per stage
    (``out_norms.i``); the last stage has no patch merging and ``normalize`` is not used.

    Features are channels-last in memory; :attr:`out_channels` and :attr:`reductions` describe the
    maps of the chosen layout.

    Works for 3D (``len(window_size) == 3``) and 2D (``len(window_size) == 2``) inputs; the 2D
    variant serves Swin-X2S.

    Args:
        in_channels: input channels.
        embed_dim: channels after the patch embedding (``feature_size`` in MONAI).
        depths / num_heads: blocks and heads per stage.
        window_size: attention window per axis.
        patch_size: patch embedding size per axis.
        attn_version: ``"v1"`` or ``"v2"`` (Swin V2 attention, post-norm, merge-then-norm).
        stage_conv: MONAI SwinUNETR-V2's residual conv block before each stage.
        use_checkpoint: gradient checkpointing, one flag for all stages or one per stage.
        out_layout: ``"monai"`` (embedding + post-merge stage outputs) or ``"swin"`` (pre-merge
            stage outputs with a learned LayerNorm each, no merging after the last stage).
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: Sequence[int] = (7, 7, 7),
        patch_size: Sequence[int] = (2, 2, 2),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attn_version: str = "v1",
        stage_conv: bool = False,
        normalize: bool = True,
        use_checkpoint: bool | Sequence[bool] = False,
        out_layout: str = "monai",
    ) -> None:
        super().__init__()
        if out_layout not in ("monai", "swin"):
            raise ValueError(f"out_layout must be 'monai' or 'swin', got {out_layout!r}")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        if len(window_size) != len(patch_size) or len(window_size) not in (2, 3):
            raise ValueError(f"window_size {tuple(window_size)} / patch_size {tuple(patch_size)} must both be 2D or 3D")
        n_stages = len(depths)
        checkpoints = [use_checkpoint] * n_stages if isinstance(use_checkpoint, bool) else list(use_checkpoint)
        if len(checkpoints) != n_stages:
            raise ValueError(f"use_checkpoint needs one flag per stage ({n_stages}), got {len(checkpoints)}")
        self.spatial_dims = len(window_size)
        self.normalize = normalize
        self.out_layout = out_layout
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        self.pos_drop = nn.Dropout(drop_rate)
        total = sum(depths)  # stochastic depth grows linearly over all blocks (plain floats: meta-safe)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        for i in range(n_stages):
            self.stages.append(
                SwinStage3D(
                    dim=embed_dim * 2**i,
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_size,
                    drop_path=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    attn_version=attn_version,
                    downsample=out_layout == "monai" or i < n_stages - 1,
                    conv_block=stage_conv,
                    use_checkpoint=checkpoints[i],
                )
            )
        n_out = n_stages + 1 if out_layout == "monai" else n_stages
        if out_layout == "swin":
            self.out_norms = nn.ModuleList(nn.LayerNorm(embed_dim * 2**i) for i in range(n_stages))
        self.out_channels: list[int] = [embed_dim * 2**i for i in range(n_out)]
        p = patch_size[0]
        self.reductions: list[int] = [p * 2**i for i in range(n_out)]

    def token_embeddings(self) -> list[nn.Module]:
        """The modules whose outputs are the image tokens ``(B, *grid, C)`` (SimMIM masks them; see
        :mod:`medswin.ssl.masking`): the patch embedding."""
        return [self.patch_embed]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding: ``(B, in, *spatial)`` -> tokens ``(B, *spatial / p, C)``."""
        return self.pos_drop(self.patch_embed(x))

    def forward_tokens(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Run the stages on embedded tokens; returns the feature maps ``(B, C_i, *grid_i)`` of the layout."""
        if self.out_layout == "swin":
            return [tokens_to_map(t) for t in self.forward_pyramid_tokens(tokens)]
        feats = [self._out(tokens)]
        x = tokens
        for stage in self.stages:
            x = stage(x)
            feats.append(self._out(x))
        return feats

    def forward_pyramid_tokens(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """``out_layout="swin"``: embedded tokens -> normalised pre-merge stage outputs ``(B, *grid_i, C_i)``."""
        if self.out_layout != "swin":
            raise RuntimeError("forward_pyramid_tokens needs out_layout='swin'")
        feats = []
        x = tokens
        for stage, norm in zip(self.stages, self.out_norms):
            x = stage.forward_blocks(x)
            feats.append(norm(x))
            if stage.downsample is not None:
                x = stage.downsample(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in, *spatial)`` -> list of ``(B, C_i, *spatial / r_i)`` features."""
        return self.forward_tokens(self.embed(x))

    def _out(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            tokens = F.layer_norm(tokens, tokens.shape[-1:])
        return tokens_to_map(tokens)
