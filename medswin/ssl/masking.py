"""SimMIM token masking for any registered encoder, without touching its forward.

Each 3D encoder declares the modules that turn the image into tokens through
``encoder.token_embeddings()`` (Swin: the patch embedding; DS-TransUNet: the fine and the coarse
patch embeddings; CSwin: the convolutional stem).  Each of them returns channels-last tokens
``(B, *grid, C)`` and exposes its width as ``embed_dim``.  :class:`TokenMasker` puts a forward hook
on each: inside ``with masker.masked(mask):`` the tokens of masked cells are replaced by a learned
mask token (one per embedding), so the encoder's own forward runs unchanged on partly masked tokens.

Masks are drawn on a grid of cubic *cells* of ``cell`` voxels (:func:`random_cell_mask`, the ratio
of masked cells is exact per crop).  A cell must cover whole tokens of every embedding: ``cell``
must be a multiple of each embedding's patch stride (Swin UNETR: 2, DS-TransUNet: 4 and 8, CSwin: 2).
The default 16 voxels is SimMIM's 3D choice at 96^3 (6^3 cells) and gives 4^3 cells at 64^3; 32 also
fits every registered model.  CSwin's stem is an overlapping k7 convolution: tokens next to a
masked cell still see up to 3 voxels into it (the patch embeddings of the Swin models do not
overlap, so their masked cells are completely hidden).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def random_cell_mask(
    batch: int,
    spatial: Sequence[int],
    cell: int,
    ratio: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random cell mask ``(B, X / cell, Y / cell, Z / cell)`` (float 0/1) with ``ceil(ratio * cells)`` ones per crop.

    Raises ``ValueError`` when a spatial size is not a multiple of ``cell``.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    bad = [s for s in spatial if s % cell]
    if cell < 1 or bad:
        raise ValueError(
            f"the SimMIM mask cell {cell} must divide the crop size {tuple(spatial)} (e.g. --roi 96 96 96 with 16)"
        )
    grid = tuple(int(s) // cell for s in spatial)
    n = math.prod(grid)
    count = math.ceil(ratio * n)
    order = torch.argsort(torch.rand(batch, n, generator=generator), dim=1)
    mask = torch.zeros(batch, n)
    mask.scatter_(1, order[:, :count], 1.0)
    return mask.view(batch, *grid).to(device)


def expand_mask(mask: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Cell mask ``(B, *cells)`` -> ``(B, *grid)`` by repeating each cell (``grid`` a multiple of ``cells``)."""
    out = mask
    for axis, (g, c) in enumerate(zip(grid, mask.shape[1:])):
        if g % c:
            raise ValueError(f"a token grid {tuple(grid)} does not split into the {tuple(mask.shape[1:])} mask cells")
        out = out.repeat_interleave(g // c, dim=axis + 1)
    return out


class TokenMasker(nn.Module):
    """Learned mask tokens hooked onto ``encoder.token_embeddings()`` (see the module docstring).

    ``with masker.masked(cell_mask): feats = encoder(x)`` replaces, in every embedding's output
    ``(B, *grid, C)``, the tokens inside masked cells by that embedding's mask token ``(C,)``.
    Outside the context the encoder is untouched.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        if not hasattr(encoder, "token_embeddings"):
            raise TypeError(
                f"{type(encoder).__name__} does not declare token_embeddings(), so SimMIM cannot mask its tokens"
            )
        modules = list(encoder.token_embeddings())
        self.mask_tokens = nn.ParameterList()
        for m in modules:
            token = nn.Parameter(torch.zeros(int(m.embed_dim)))
            nn.init.trunc_normal_(token, std=0.02)
            self.mask_tokens.append(token)
        self._mask: torch.Tensor | None = None
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, index: int):
        def hook(module: nn.Module, inputs: tuple, tokens: torch.Tensor) -> torch.Tensor | None:
            if self._mask is None:
                return None
            m = expand_mask(self._mask, tokens.shape[1:-1]).unsqueeze(-1).to(tokens.dtype)
            token = self.mask_tokens[index].to(tokens.dtype)
            return tokens * (1 - m) + token * m

        return hook

    @contextmanager
    def masked(self, mask: torch.Tensor) -> Iterator[None]:
        """Mask the encoder's tokens with the cell mask ``(B, *cells)`` inside the ``with`` block."""
        self._mask = mask
        try:
            yield
        finally:
            self._mask = None

    def remove(self) -> None:
        """Detach the hooks from the encoder."""
        for h in self._handles:
            h.remove()
        self._handles = []
