"""Shifted-window bookkeeping for 2D and 3D Swin blocks.

Two implementations of the same operation live here:

* the *reference* path (:func:`pad_to_windows`, :func:`window_partition`, :func:`window_reverse`,
  :func:`shift_region_mask`) spells out pad -> roll -> partition the way the Swin paper and MONAI
  do; it is used by tests and is easy to read;
* the *fast* path, :class:`WindowLayout`, fuses pad + roll + partition (and the inverse
  partition + roll + crop) into one row gather each way, and orders the windows so that windows
  needing the same shift mask are contiguous.  Attention then runs one fused SDPA call per
  mask type with a broadcast ``(1, heads, N, N)`` mask, instead of materialising a mask per
  window.

Conventions (identical to MONAI's ``SwinUNETR`` so weights transfer):

* tokens are channels-last: ``(B, *grid, C)`` with ``grid`` of length 2 or 3;
* an axis no larger than the window uses a window equal to its size and no shift;
* the grid is padded at the end of each axis to a multiple of the window; padded tokens are zero
  and are *not* masked;
* shifted blocks roll by ``-shift`` before partitioning; the padded grid is split along each
  shifted axis into ``[0:-W]``, ``[-W:-s]`` and ``[-s:]`` and tokens of different regions get
  ``-100`` added to their attention logits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _disable_current_modes

from .plain import use_plain_ops

MASK_VALUE = -100.0
"""Logit offset between tokens of different shifted-window regions (Swin / MONAI convention)."""


def effective_window(
    grid: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Window and shift actually used on a feature map of size ``grid``.

    An axis no larger than its window gets a window equal to its size and shift 0 (MONAI's
    ``get_window_size`` rule), so small feature maps are attended globally along that axis.
    """
    if not (len(grid) == len(window) == len(shift)):
        raise ValueError(f"grid {tuple(grid)}, window {tuple(window)} and shift {tuple(shift)} differ in length")
    win = tuple(g if g <= w else w for g, w in zip(grid, window))
    sh = tuple(0 if g <= w else s for g, w, s in zip(grid, window, shift))
    return win, sh


def padded_grid(grid: Sequence[int], window: Sequence[int]) -> tuple[int, ...]:
    """Smallest grid >= ``grid`` that is a multiple of ``window`` on every axis."""
    return tuple(math.ceil(g / w) * w for g, w in zip(grid, window))


def pad_to_windows(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Zero-pad channels-last tokens ``(B, *grid, C)`` at the end of each axis to a multiple of ``window``."""
    grid = x.shape[1:-1]
    pads: list[int] = [0, 0]  # channel axis
    for g, w in reversed(list(zip(grid, window))):
        pads += [0, (w - g % w) % w]
    return F.pad(x, pads) if any(pads) else x


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Split ``(B, *grid, C)`` (grid divisible by ``window``) into windows ``(B * nW, prod(window), C)``.

    Windows are ordered batch-major, then row-major over the window grid (MONAI's order).
    """
    b, *grid, c = x.shape
    nd = len(grid)
    shape = [b]
    for g, w in zip(grid, window):
        shape += [g // w, w]
    x = x.reshape(*shape, c)
    # (b, n0, w0, n1, w1, ..., c) -> (b, n0, n1, ..., w0, w1, ..., c)
    order = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [1 + 2 * nd]
    return x.permute(order).reshape(-1, math.prod(window), c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], batch: int, grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, prod(window), C)`` -> ``(B, *grid, C)``."""
    nd = len(grid)
    c = windows.shape[-1]
    counts = [g // w for g, w in zip(grid, window)]
    x = windows.reshape(batch, *counts, *window, c)
    order = [0]
    for i in range(nd):
        order += [1 + i, 1 + nd + i]
    order.append(1 + 2 * nd)
    return x.permute(order).reshape(batch, *grid, c)


def region_labels(padded: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> torch.Tensor:
    """Integer label per position of the (padded, rolled) grid: the shifted-window regions.

    Each shifted axis is cut into ``[0:-W]``, ``[-W:-s]``, ``[-s:]``; an unshifted axis is one
    region.  Returns a ``LongTensor`` of shape ``padded``.
    """
    labels = torch.zeros(tuple(padded), dtype=torch.long)
    for axis, (p, w, s) in enumerate(zip(padded, window, shift)):
        axis_label = torch.zeros(p, dtype=torch.long)
        if s > 0:
            axis_label[p - w : p - s] = 1
            axis_label[p - s :] = 2
        view = [1] * len(padded)
        view[axis] = p
        labels = labels * 3 + axis_label.view(view)
    return labels


def shift_region_mask(padded: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> torch.Tensor:
    """Reference shifted-window mask ``(nW, N, N)``: 0 inside a region, :data:`MASK_VALUE` across regions."""
    labels = region_labels(padded, window, shift)
    lw = window_partition(labels.view(1, *padded, 1).float(), window).squeeze(-1)  # (nW, N)
    diff = lw.unsqueeze(1) - lw.unsqueeze(2)
    return torch.where(diff != 0, MASK_VALUE, 0.0)


# ----------------------------------------------------------------------------------------------
# fast path
# ----------------------------------------------------------------------------------------------


class _GatherRows(torch.autograd.Function):
    """Row gather ``out = x[index]`` whose backward is another gather (not a scatter-add).

    Valid because ``index`` restricted to non-zeroed rows is injective: every source row lands in
    exactly one output row, so the gradient is the inverse gather.  Rows listed in ``zero_rows``
    are padding: they are zero in the output and receive no gradient.
    """

    @staticmethod
    def forward(ctx, x, index, zero_rows, inverse, inverse_zero_rows):  # type: ignore[override]
        ctx.save_for_backward(inverse, inverse_zero_rows)
        out = x.index_select(0, index)
        if zero_rows.numel():
            out.index_fill_(0, zero_rows, 0)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        inverse, inverse_zero_rows = ctx.saved_tensors
        g = grad.contiguous().index_select(0, inverse)
        if inverse_zero_rows.numel():
            g.index_fill_(0, inverse_zero_rows, 0)
        return g, None, None, None, None


def _gather_rows(
    x: torch.Tensor,
    index: torch.Tensor,
    zero_rows: torch.Tensor,
    inverse: torch.Tensor,
    inverse_zero_rows: torch.Tensor,
) -> torch.Tensor:
    """``x[index]`` with the padding rows zeroed: the fused gather, or plain ops while tracing (:mod:`.plain`)."""
    if use_plain_ops():
        out = x.index_select(0, index)
        return out.index_fill(0, zero_rows, 0) if zero_rows.numel() else out
    return _GatherRows.apply(x, index, zero_rows, inverse, inverse_zero_rows)


@dataclass(frozen=True)
class WindowGroup:
    """A contiguous run of windows ``[start, stop)`` that share one shift-mask type."""

    start: int
    stop: int
    mask_index: int | None  # index into WindowLayout.masks, None = no mask needed


class WindowLayout:
    """Precomputed gather plan for (shifted) window attention on a ``(B, *grid, C)`` token map.

    ``to_windows`` turns tokens into ``(num_windows, N, C)`` windows (pad + roll + partition in
    one gather) with windows grouped by mask type; ``from_windows`` inverts it (reverse + roll +
    crop in one gather).  ``groups`` lists the window runs and ``masks`` holds one ``(N, N)``
    mask per type (0 / -100).  Layouts are cached per (batch, grid, window, shift, device), so
    building them costs nothing after the first call.
    """

    def __init__(
        self,
        batch: int,
        grid: Sequence[int],
        window: Sequence[int],
        shift: Sequence[int],
        device: torch.device | str = "cpu",
    ) -> None:
        self.batch = int(batch)
        self.grid = tuple(int(g) for g in grid)
        self.window, self.shift = effective_window(self.grid, tuple(window), tuple(shift))
        self.padded = padded_grid(self.grid, self.window)
        self.tokens_per_window = math.prod(self.window)
        counts = [p // w for p, w in zip(self.padded, self.window)]
        self.windows_per_image = math.prod(counts)
        self.num_windows = self.batch * self.windows_per_image
        nd = len(self.grid)

        # --- which windows need which mask: type bit per shifted axis where the window is last
        shifted_axes = [a for a in range(nd) if self.shift[a] > 0]
        window_coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in counts], indexing="ij"), -1).reshape(
            -1, nd
        )  # (nW, nd)
        type_code = torch.zeros(self.windows_per_image, dtype=torch.long)
        for bit, a in enumerate(shifted_axes):
            type_code += (window_coords[:, a] == counts[a] - 1).long() << bit
        # order windows by type (stable), then batch, then row-major position
        order = torch.argsort(type_code, stable=True)
        sorted_types = type_code[order]

        # --- source token for each slot of each window (padded, rolled grid)
        in_window = torch.stack(torch.meshgrid(*[torch.arange(w) for w in self.window], indexing="ij"), -1).reshape(
            -1, nd
        )  # (N, nd)
        pos = window_coords[order].unsqueeze(1) * torch.tensor(self.window) + in_window.unsqueeze(0)  # (nW, N, nd)
        src = (pos + torch.tensor(self.shift)) % torch.tensor(self.padded)  # position before the roll
        valid = (src < torch.tensor(self.grid)).all(-1)  # padding slots are invalid
        strides = torch.tensor([math.prod(self.grid[a + 1 :]) for a in range(nd)])
        flat = (src * strides).sum(-1)  # (nW, N) flat index in one image
        n_img = math.prod(self.grid)
        # batch goes *inside* each type group so a group is contiguous across the batch
        bounds = torch.searchsorted(sorted_types, torch.arange(2 ** len(shifted_axes) + 1))
        slot_index, slot_valid, groups = [], [], []
        start = 0
        self._mask_types: list[int] = []
        for t in range(2 ** len(shifted_axes)):
            lo, hi = int(bounds[t]), int(bounds[t + 1])
            if hi == lo:
                continue
            offsets = (torch.arange(self.batch) * n_img).view(-1, 1, 1)
            slot_index.append((flat[lo:hi].unsqueeze(0) + offsets).reshape(-1))
            slot_valid.append(valid[lo:hi].unsqueeze(0).expand(self.batch, -1, -1).reshape(-1))
            n = (hi - lo) * self.batch
            mask_index = None
            if t != 0:
                mask_index = len(self._mask_types)
                self._mask_types.append(t)
            groups.append(WindowGroup(start, start + n, mask_index))
            start += n
        self.groups: tuple[WindowGroup, ...] = tuple(groups)
        index = torch.cat(slot_index)
        valid_all = torch.cat(slot_valid)
        self.index = torch.where(valid_all, index, 0).to(device)
        self.zero_rows = torch.nonzero(~valid_all).flatten().to(device)
        inverse = torch.empty(self.batch * n_img, dtype=torch.long)
        inverse[index[valid_all]] = torch.nonzero(valid_all).flatten()
        self.inverse = inverse.to(device)
        self._empty = torch.empty(0, dtype=torch.long, device=device)
        self._mask_cache: dict[torch.dtype, torch.Tensor] = {}
        self._shifted_axes = shifted_axes

    def masks(self, dtype: torch.dtype) -> torch.Tensor:
        """Shift masks ``(num_types, N, N)`` in ``dtype`` (0 within a region, -100 across)."""
        cached = self._mask_cache.get(dtype)
        if cached is None:
            # cached: must stay usable outside inference mode, and be real tensors even when first asked
            # for while torch.export traces (a constant of the exported graph)
            with torch.inference_mode(False), outside_tracing():
                cached = self._mask_cache[dtype] = self._build_masks(dtype)
        return cached

    def _build_masks(self, dtype: torch.dtype) -> torch.Tensor:
        n = self.tokens_per_window
        nd = len(self.grid)
        in_window = torch.stack(torch.meshgrid(*[torch.arange(w) for w in self.window], indexing="ij"), -1).reshape(
            -1, nd
        )
        out = []
        for t in self._mask_types:
            label = torch.zeros(n, dtype=torch.long)
            for bit, a in enumerate(self._shifted_axes):
                if (t >> bit) & 1:
                    # last window on axis a: offsets [0, W-s) are region [-W:-s], the rest [-s:]
                    part = (in_window[:, a] >= self.window[a] - self.shift[a]).long()
                    label = label * 2 + part
                else:
                    label = label * 2
            out.append(torch.where(label[:, None] != label[None, :], MASK_VALUE, 0.0))
        return (torch.stack(out) if out else torch.zeros(0, n, n)).to(device=self.index.device, dtype=dtype)

    def to_windows(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *grid, C)`` -> windows ``(num_windows, N, C)`` in group order (padding rows are zero)."""
        c = x.shape[-1]
        rows = _gather_rows(x.reshape(-1, c), self.index, self.zero_rows, self.inverse, self._empty)
        return rows.view(self.num_windows, self.tokens_per_window, c)

    def from_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows ``(num_windows, N, C)`` -> tokens ``(B, *grid, C)``; padding rows are dropped."""
        c = windows.shape[-1]
        rows = _gather_rows(windows.reshape(-1, c), self.inverse, self._empty, self.index, self.zero_rows)
        return rows.view(self.batch, *self.grid, c)


@lru_cache(maxsize=256)
def _cached_layout(batch, grid, window, shift, device_type, device_index) -> WindowLayout:
    device = torch.device(device_type, device_index) if device_index is not None else torch.device(device_type)
    # cached tensors must be usable by autograd later, even if first built under inference_mode, and
    # real (the plan's sizes are read from them) even when first built while torch.export traces
    with torch.inference_mode(False), outside_tracing():
        return WindowLayout(batch, grid, window, shift, device)


@contextmanager
def outside_tracing() -> Iterator[None]:
    """Build cached constants (gather plans, masks) as real tensors that no tracer records: neither
    ``torch.export`` (fake tensors, whose sizes the plan could not read) nor ``torch.jit.trace`` (whose
    graph would then hold the construction on the first call and a constant on the next)."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        with _disable_current_modes():
            yield
    finally:
        torch._C._set_tracing_state(state)


def get_window_layout(
    batch: int | torch.SymInt,
    grid: Sequence[int],
    window: Sequence[int],
    shift: Sequence[int],
    device: torch.device,
) -> WindowLayout | AnyBatchWindowLayout:
    """Cached :class:`WindowLayout` for this (batch, grid, window, shift, device).

    In plain-ops mode (:mod:`.plain`: export) an :class:`AnyBatchWindowLayout` instead, whose gathers
    do not depend on the batch size, so an exported graph takes any batch.
    """
    device = torch.device(device)
    key = (tuple(int(g) for g in grid), tuple(window), tuple(shift), device.type, device.index)
    if use_plain_ops():
        return AnyBatchWindowLayout(_cached_layout(1, *key), batch)
    return _cached_layout(int(batch), *key)


class AnyBatchWindowLayout:
    """A one-image :class:`WindowLayout` applied to every image of a batch, in plain ops (for export).

    The gathers index the token axis of ``(B, n_tokens, C)`` with the one-image plan, so they hold
    for any ``B`` (a symbolic batch while ``torch.export`` traces).  Windows come out window-major,
    ``(num_windows_per_image * B, N, C)``: a mask group ``[start, stop)`` of the one-image plan is
    ``[start * B, stop * B)`` here, contiguous across the batch as the attention expects.  Same
    attributes as :class:`WindowLayout` for what the attention reads (``window``, ``groups``, ``masks``).

    Args:
        image_layout: the plan for one image (``batch == 1``).
        batch: the batch size ``B`` (an int, or a ``SymInt`` while exporting).
    """

    def __init__(self, image_layout: WindowLayout, batch: int | torch.SymInt) -> None:
        if image_layout.batch != 1:
            raise ValueError(f"AnyBatchWindowLayout needs a one-image layout, got batch {image_layout.batch}")
        self.image = image_layout
        self.batch = batch
        self.grid, self.window, self.shift = image_layout.grid, image_layout.window, image_layout.shift
        self.tokens_per_window = image_layout.tokens_per_window
        self.groups = tuple(WindowGroup(g.start * batch, g.stop * batch, g.mask_index) for g in image_layout.groups)

    def masks(self, dtype: torch.dtype) -> torch.Tensor:
        """Shift masks ``(num_types, N, N)`` in ``dtype`` (those of the one-image plan)."""
        return self.image.masks(dtype)

    def to_windows(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *grid, C)`` -> windows ``(num_windows_per_image * B, N, C)``, window-major (padding rows zero)."""
        b, c = x.shape[0], x.shape[-1]
        rows = x.reshape(b, -1, c).index_select(1, self.image.index)
        if self.image.zero_rows.numel():
            rows = rows.index_fill(1, self.image.zero_rows, 0)
        n = self.tokens_per_window
        return rows.view(b, -1, n, c).transpose(0, 1).reshape(-1, n, c)

    def from_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows ``(num_windows_per_image * B, N, C)`` -> tokens ``(B, *grid, C)``; padding rows dropped."""
        n, c = windows.shape[1], windows.shape[2]
        per_image = self.image.windows_per_image
        rows = windows.reshape(per_image, -1, n, c).transpose(0, 1).reshape(-1, per_image * n, c)
        return rows.index_select(1, self.image.inverse).view(-1, *self.grid, c)


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """``(N, N)`` index into a ``prod(2W-1)`` relative-position table for every token pair.

    Row-major flattening of the per-axis offsets shifted to be non-negative (Swin / MONAI order).
    """
    nd = len(window)
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # (N, N, nd)
    index = torch.zeros(rel.shape[:2], dtype=torch.long)
    for a in range(nd):
        stride = math.prod(2 * w - 1 for w in window[a + 1 :])
        index += (rel[..., a] + window[a] - 1) * stride
    return index


def relative_offsets(window: Sequence[int]) -> torch.Tensor:
    """All relative offsets of a window, ``(prod(2W-1), nd)``, in the order of the position table."""
    ranges = [torch.arange(-(w - 1), w) for w in window]
    return torch.stack(torch.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, len(window))
