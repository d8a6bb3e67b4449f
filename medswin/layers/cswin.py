"""Cross-shaped-window (CSWin) transformer blocks and the hierarchical CSwin encoder, in 3D.

CSWin (Dong et al., "CSWin Transformer", CVPR 2022) splits the channels and heads of a block into
groups that attend inside stripes: in 2D one group attends in horizontal stripes, the other in
vertical ones.  Our 3D design (no author code exists for 3D; see :mod:`medswin.models.cswin_unet`)
uses three groups, one per axis ``a`` of ``(D, H, W)``: group ``a`` attends inside stripes that
span the whole extent of axis ``a`` and ``sw`` voxels along the two other axes, i.e. windows of
shape ``(D, sw, sw)``, ``(sw, H, sw)`` and ``(sw, sw, W)``.  Per window::

    softmax(Q K^T / sqrt(d)) V + LePE(V)

with LePE a depthwise ``Conv3d(k=3, p=1, bias)`` on ``V`` of that window alone (zero padding at
the window borders).  The three groups are concatenated and projected.  A global branch (all
heads, the whole volume one window, plus LePE) replaces the three groups in the last stage.

Tokens travel channels-last, ``(B, D, H, W, C)``, as in :mod:`medswin.layers.swin`.  Windows are
gathered with one reshape/permute per group (no loops over windows), attention runs through
``scaled_dot_product_attention`` and LePE is one depthwise convolution over a batch of windows.
When an axis is not a multiple of ``sw`` the grid is zero-padded at its end; padded keys are
masked out (nothing attends to padding), padded values are zero for LePE (so LePE sees exactly the
zero padding it would see at the volume border) and padded queries are cropped away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

from .conv import ChannelsLastConv3d
from .helpers import to_3tuple
from .swin import Mlp, map_to_tokens, tokens_to_map
from .window import padded_grid

AXES = (0, 1, 2)


def as_stride(value: int | Sequence[int], name: str = "stride") -> tuple[int, int, int]:
    """An int or three per-axis ints -> a validated ``(d, h, w)`` stride (every entry >= 1)."""
    return to_3tuple(value, name, minimum=1)


def stripe_window(grid: Sequence[int], axis: int | None, stripe_width: int | None) -> tuple[int, int, int]:
    """Window shape of one branch on a ``grid``.

    ``axis=None`` (global branch): the whole grid.  Otherwise the whole extent of ``axis`` and
    ``min(stripe_width, extent)`` along the two other axes (a stripe wider than the map is the map).
    """
    if axis is None:
        return tuple(int(g) for g in grid)  # type: ignore[return-value]
    assert stripe_width is not None
    window = (int(g) if a == axis else min(stripe_width, int(g)) for a, g in enumerate(grid))
    return tuple(window)  # type: ignore[return-value]


def to_windows(t: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``(B, Dp, Hp, Wp, *rest)`` -> ``(B * nw, wd, wh, ww, *rest)``, windows in ``(b, d, h, w)`` order.

    The grid must be a multiple of ``window``.
    """
    b, dp, hp, wp = t.shape[:4]
    rest = t.shape[4:]
    wd, wh, ww = window
    t = t.view(b, dp // wd, wd, hp // wh, wh, wp // ww, ww, *rest)
    t = t.permute(0, 1, 3, 5, 2, 4, 6, *range(7, 7 + len(rest)))
    return t.reshape(-1, wd, wh, ww, *rest)


def from_windows(w: torch.Tensor, window: Sequence[int], batch: int, grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`to_windows` for ``(B * nw, wd, wh, ww, C)`` windows -> ``(B, Dp, Hp, Wp, C)``."""
    wd, wh, ww = window
    nd, nh, nw = (g // s for g, s in zip(grid, window))
    c = w.shape[-1]
    w = w.view(batch, nd, nh, nw, wd, wh, ww, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return w.reshape(batch, *grid, c)


def _valid_mask(padded: Sequence[int], grid: Sequence[int], device: torch.device) -> torch.Tensor:
    """Boolean ``(Dp, Hp, Wp)``: True on the real voxels of a grid padded at its end."""
    ranges = [torch.arange(p, device=device) < g for p, g in zip(padded, grid)]
    return ranges[0][:, None, None] & ranges[1][None, :, None] & ranges[2][None, None, :]


class CSwinAttention3D(nn.Module):
    """Cross-shaped-window self-attention with LePE on channels-last tokens ``(B, D, H, W, C)``.

    Args:
        dim: channels ``C``.
        num_heads: heads ``h``; with stripes ``C`` and ``h`` are split into three contiguous
            groups (D-, H-, W-stripes), so both must be divisible by 3.
        stripe_width: ``sw`` voxels across each stripe; ``None`` or 0 = one global branch with
            all heads (the whole volume is one window).
        qkv_bias: bias of the ``Linear(C, 3C)`` producing q, k, v.

    ``forward(x)`` takes *normalised* tokens and returns ``Linear(C, C)`` of the concatenated
    branch outputs, ``(B, D, H, W, C)``.
    """

    def __init__(self, dim: int, num_heads: int, stripe_width: int | None, qkv_bias: bool = True) -> None:
        super().__init__()
        if stripe_width is not None and stripe_width < 0:
            raise ValueError(
                f"stripe_width must be a positive int, or None / 0 for global attention, got {stripe_width}"
            )
        self.stripe_width = stripe_width or None
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if self.stripe_width is not None:
            if num_heads % 3:
                raise ValueError(
                    f"num_heads {num_heads} is not divisible by 3: cross-shaped windows give one third of the "
                    "heads to each axis (D, H, W)"
                )
            if dim % 3:
                raise ValueError(
                    f"dim {dim} is not divisible by 3: cross-shaped windows give one third of the channels to "
                    "each axis (D, H, W)"
                )
        self.axes: tuple[int | None, ...] = AXES if self.stripe_width is not None else (None,)
        self.dim, self.num_heads = dim, num_heads
        self.branch_dim = dim // len(self.axes)
        self.branch_heads = num_heads // len(self.axes)
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        # one depthwise LePE convolution per branch, on that branch's channels of V
        self.lepe = nn.ModuleList(
            ChannelsLastConv3d(self.branch_dim, self.branch_dim, 3, padding=1, groups=self.branch_dim, bias=True)
            for _ in self.axes
        )
        self.proj = nn.Linear(dim, dim)

    def window(self, branch: int, grid: Sequence[int]) -> tuple[int, int, int]:
        """Window shape of ``branch`` on a ``grid``."""
        return stripe_window(grid, self.axes[branch], self.stripe_width)

    def branch(self, index: int, qkv: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """Attention + LePE of one branch on a grid padded to multiples of its window.

        ``qkv``: ``(B, Dp, Hp, Wp, 3, C_b)`` (q, k, v of this branch's channels), real voxels in
        ``[:grid[0], :grid[1], :grid[2]]``; whatever lies in the padded tail is ignored.  Returns
        ``(B, Dp, Hp, Wp, C_b)``; values at padded positions are meaningless (crop them).
        """
        b, *padded = qkv.shape[:4]
        window = self.window(index, grid)
        n = math.prod(window)
        heads, hd = self.branch_heads, self.head_dim
        q, k, v = qkv.unbind(-2)
        mask = None
        if tuple(padded) != tuple(grid):
            valid = _valid_mask(padded, grid, qkv.device)
            # LePE must see zeros outside the volume, exactly as its zero padding at window borders
            v = v * valid[..., None].to(v.dtype)
            # key mask per window (True = attend; False is a -inf logit in SDPA); every window holds
            # real voxels, so no softmax row is empty
            keys = to_windows(valid[None, ..., None], window).reshape(-1, n)
            mask = keys.repeat(b, 1).view(-1, 1, 1, n)
        qw, kw, vw = (to_windows(t, window) for t in (q, k, v))  # (B * nw, wd, wh, ww, C_b)
        nwin = qw.shape[0]
        qh, kh, vh = (t.reshape(nwin, n, heads, hd).transpose(1, 2) for t in (qw, kw, vw))  # views may be strided
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=hd**-0.5)
        out = out.transpose(1, 2).reshape(nwin, *window, heads * hd)
        # LePE on each window's own voxels: windows are a batch of small volumes
        lepe = self.lepe[index](vw.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
        return from_windows(out + lepe, window, b, padded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W, C)`` normalised tokens -> ``(B, D, H, W, C)``."""
        b, *grid, c = x.shape
        if len(grid) != 3 or c != self.dim:
            raise ValueError(f"expected tokens (B, D, H, W, {self.dim}), got {tuple(x.shape)}")
        qkv = self.qkv(x).view(b, *grid, 3, c)
        cb = self.branch_dim
        outs = []
        for i in range(len(self.axes)):
            part = qkv[..., i * cb : (i + 1) * cb]
            padded = padded_grid(grid, self.window(i, grid))
            if padded != tuple(grid):
                pads = [0, 0, 0, 0]  # channels, q/k/v
                for g, p in zip(reversed(grid), reversed(padded)):
                    pads += [0, p - g]
                part = F.pad(part, pads)
            out = self.branch(i, part, grid)
            if padded != tuple(grid):
                out = out[:, : grid[0], : grid[1], : grid[2]]
            outs.append(out)
        return self.proj(outs[0] if len(outs) == 1 else torch.cat(outs, -1))


class CSwinBlock3D(nn.Module):
    """CSWin block on tokens ``(B, D, H, W, C)``: ``x + DropPath(CSWA(LN x))`` then ``x + DropPath(MLP(LN x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        stripe_width: int | None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CSwinAttention3D(dim, num_heads, stripe_width, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W, C)`` -> ``(B, D, H, W, C)``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvTokens3D(nn.Module):
    """``Conv3d`` + ``LayerNorm`` on tokens: the stem (k7, p3) and the merges (k3, p1, C -> 2C).

    Tokens ``(B, D, H, W, C_in)`` -> ``(B, ceil(D / s_d), ceil(H / s_h), ceil(W / s_w), C_out)``;
    the stem takes the image ``(B, in, D, H, W)`` (``image=True``).
    """

    def __init__(
        self, in_dim: int, out_dim: int, kernel: int, stride: tuple[int, int, int], image: bool = False
    ) -> None:
        super().__init__()
        self.image = image
        self.embed_dim = out_dim
        self.conv = ChannelsLastConv3d(in_dim, out_dim, kernel_size=kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image or tokens in, tokens out."""
        return self.norm(map_to_tokens(self.conv(x if self.image else tokens_to_map(x))))


class CSwinStage3D(nn.Module):
    """``depth`` CSWin blocks then a strided convolutional merge (``C -> 2C``) with LayerNorm."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        stripe_width: int | None,
        drop_path: Sequence[float],
        merge_stride: tuple[int, int, int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            CSwinBlock3D(dim, num_heads, stripe_width, mlp_ratio, qkv_bias, drop_path[i]) for i in range(depth)
        )
        self.merge = ConvTokens3D(dim, 2 * dim, 3, merge_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *grid, C)`` -> ``(B, *ceil(grid / stride), 2C)``."""
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.merge(x)


class CSwinEncoder3D(nn.Module):
    """Hierarchical CSwin encoder returning 5 feature maps (Swin UNETR's shapes when isotropic).

    Stem ``Conv3d(in -> F, k7, s=stem_stride, p3)`` + LN, then 4 stages of CSWin blocks at
    ``F, 2F, 4F, 8F`` channels, each followed by a merge ``Conv3d(k3, s=merge_stride, p1)``
    (``C -> 2C``) + LN.  ``forward(x)`` returns the stem output and every stage's merged output:
    ``[f0, .., f4]`` with ``F * 2^i`` channels at reductions ``/2 .. /32`` for stride 2, channels-last
    in memory.

    Args:
        in_channels: image channels.
        embed_dim: ``F``.
        depths / num_heads: blocks and heads per stage (heads divisible by 3 in stripe stages).
        stripe_widths: per stage, ``sw`` or ``None`` / 0 for the global branch.
        stem_stride: int or ``(d, h, w)``, e.g. ``(1, 2, 2)`` for thick slices.
        merge_strides: int, ``(d, h, w)`` or one of those per stage.
        mlp_ratio: MLP hidden size over ``C``.
        drop_path_rate: stochastic depth, growing linearly to this over all blocks.
        use_checkpoint: gradient checkpointing of every block.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int = 48,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        stripe_widths: Sequence[int | None] = (1, 2, 6, None),
        stem_stride: int | Sequence[int] = 2,
        merge_strides: int | Sequence[int] | Sequence[int | Sequence[int]] = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        n_stages = len(depths)
        if len(num_heads) != n_stages or len(stripe_widths) != n_stages:
            raise ValueError(
                f"depths {tuple(depths)}, num_heads {tuple(num_heads)} and stripe_widths {tuple(stripe_widths)} "
                "need one entry per stage"
            )
        self.stem_stride = as_stride(stem_stride, "stem_stride")
        self.merge_strides = normalize_merge_strides(merge_strides, n_stages)
        self.stripe_widths: tuple[int | None, ...] = tuple(sw or None for sw in stripe_widths)
        for i, (heads, sw) in enumerate(zip(num_heads, self.stripe_widths)):
            dim = embed_dim * 2**i
            where = f"stage {i} (dim {dim}, {heads} heads, stripe width {sw})"
            if dim % heads:
                raise ValueError(f"{where}: dim is not divisible by num_heads")
            if sw is not None and (heads % 3 or dim % 3):
                raise ValueError(
                    f"{where}: cross-shaped windows split heads and channels into 3 axis groups, so both must be "
                    "divisible by 3 (or make the stage global with stripe width None)"
                )
        self.stem = ConvTokens3D(in_channels, embed_dim, 7, self.stem_stride, image=True)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList(
            CSwinStage3D(
                dim=embed_dim * 2**i,
                depth=depths[i],
                num_heads=num_heads[i],
                stripe_width=self.stripe_widths[i],
                drop_path=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                merge_stride=self.merge_strides[i],
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                use_checkpoint=use_checkpoint,
            )
            for i in range(n_stages)
        )
        self.out_channels: list[int] = [embed_dim * 2**i for i in range(n_stages + 1)]
        self.strides: list[tuple[int, int, int]] = [self.stem_stride, *self.merge_strides]
        reductions, r = [], (1, 1, 1)
        for s in self.strides:
            r = tuple(a * b for a, b in zip(r, s))
            reductions.append(r)
        self.isotropic = all(len(set(s)) == 1 for s in self.strides)
        self.reductions: list[int] | list[tuple[int, int, int]] = (
            [r[0] for r in reductions] if self.isotropic else reductions  # type: ignore[assignment]
        )
        self.apply(_init_weights)

    def token_embeddings(self) -> list[nn.Module]:
        """The modules whose outputs are the image tokens ``(B, D, H, W, C)`` (SimMIM masks them; see
        :mod:`medswin.ssl.masking`): the convolutional stem."""
        return [self.stem]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, in, D, H, W)`` -> 5 feature maps ``(B, C_i, *spatial / r_i)`` (channels-last memory)."""
        tokens = self.stem(x)
        feats = [tokens_to_map(tokens)]
        for stage in self.stages:
            tokens = stage(tokens)
            feats.append(tokens_to_map(tokens))
        return feats


def normalize_merge_strides(
    merge_strides: int | Sequence[int] | Sequence[int | Sequence[int]], n_stages: int
) -> list[tuple[int, int, int]]:
    """An int, one ``(d, h, w)`` for all stages, or one int / triple per stage -> per-stage triples.

    A tuple of three ints is a per-axis stride for every stage; a list holds one entry per stage
    (a list of three ints is also read as per-axis when there are not three stages).
    """
    if isinstance(merge_strides, int):
        return [as_stride(merge_strides, "merge_strides")] * n_stages
    items = list(merge_strides)
    three_ints = len(items) == 3 and all(isinstance(v, int) for v in items)
    if three_ints and (isinstance(merge_strides, tuple) or n_stages != 3):
        return [as_stride(items, "merge_strides")] * n_stages  # type: ignore[arg-type]
    if len(items) != n_stages:
        raise ValueError(
            f"merge_strides needs an int, a (d, h, w) triple or one of those per stage ({n_stages}), "
            f"got {merge_strides!r}"
        )
    return [as_stride(v, f"merge_strides[{i}]") for i, v in enumerate(items)]


def _init_weights(m: nn.Module) -> None:
    # CSWin's initialisation: truncated normal (std 0.02) linear weights, zero biases, unit LayerNorm
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
