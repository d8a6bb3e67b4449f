"""Window partition/reverse and the fused gather layout against the pad -> roll -> partition reference."""

from __future__ import annotations

import pytest
import torch

from medswin.layers.window import (
    MASK_VALUE,
    effective_window,
    get_window_layout,
    pad_to_windows,
    padded_grid,
    shift_region_mask,
    window_partition,
    window_reverse,
)

GRIDS = [
    ((8, 8, 8), (4, 4, 4)),  # divisible
    ((5, 9, 11), (4, 4, 4)),  # odd, non-cubic: padding on every axis
    ((3, 6, 10), (7, 7, 7)),  # smaller than the window on two axes
    ((9, 13), (4, 4)),  # 2D (Swin-X2S)
]


@pytest.mark.parametrize("grid,window", GRIDS)
def test_partition_reverse_round_trip(grid, window):
    x = torch.randn(2, *grid, 5)
    win, _ = effective_window(grid, window, tuple(w // 2 for w in window))
    padded = pad_to_windows(x, win)
    assert padded.shape[1:-1] == padded_grid(grid, win)
    windows = window_partition(padded, win)
    n_windows = 2 * torch.tensor(padded.shape[1:-1]).div(torch.tensor(win), rounding_mode="floor").prod()
    assert windows.shape == (int(n_windows), torch.tensor(win).prod().item(), 5)
    assert torch.equal(window_reverse(windows, win, 2, padded.shape[1:-1]), padded)


def test_effective_window_follows_monai_rule():
    assert effective_window((3, 14, 7), (7, 7, 7), (3, 3, 3)) == ((3, 7, 7), (0, 3, 0))


def _reference_windows(x, window, shift):
    win, sh = effective_window(x.shape[1:-1], window, shift)
    padded = pad_to_windows(x, win)
    if any(sh):
        padded = torch.roll(padded, shifts=[-s for s in sh], dims=list(range(1, x.dim() - 1)))
    return window_partition(padded, win), win, sh


@pytest.mark.parametrize("grid,window", GRIDS)
@pytest.mark.parametrize("shifted", [False, True])
def test_layout_matches_reference_partition_and_masks(grid, window, shifted):
    x = torch.randn(2, *grid, 3)
    shift = tuple(w // 2 for w in window) if shifted else (0,) * len(window)
    layout = get_window_layout(2, grid, window, shift, x.device)
    ref, win, sh = _reference_windows(x, window, shift)
    assert layout.window == win and layout.shift == sh
    ours = layout.to_windows(x)
    assert ours.shape == ref.shape
    # our windows are grouped by mask type; find each of ours among the reference windows
    ref_mask = shift_region_mask(padded_grid(grid, win), win, sh) if any(sh) else None
    masks = layout.masks(torch.float32)
    per_image = layout.windows_per_image
    matched = set()
    for group in layout.groups:
        for w in range(group.start, group.stop):
            hits = [r for r in range(ref.shape[0]) if r not in matched and torch.equal(ref[r], ours[w])]
            assert hits, f"window {w} has no reference counterpart"
            r = hits[0]
            matched.add(r)
            if ref_mask is not None:
                expected = ref_mask[r % per_image]
                got = torch.zeros_like(expected) if group.mask_index is None else masks[group.mask_index]
                assert torch.equal(got, expected)
    assert len(matched) == ref.shape[0]
    # and back: the inverse gather restores the tokens exactly
    assert torch.equal(layout.from_windows(ours), x)


def test_layout_groups_only_mask_boundary_windows():
    layout = get_window_layout(1, (14, 14, 14), (7, 7, 7), (3, 3, 3), torch.device("cpu"))
    # 2x2x2 windows: one interior-type window needs no mask, 7 need one of 7 mask types
    assert [g.stop - g.start for g in layout.groups] == [1] * 8
    assert layout.groups[0].mask_index is None
    masks = layout.masks(torch.float32)
    assert masks.shape == (7, 343, 343)
    assert set(masks.unique().tolist()) == {0.0, MASK_VALUE}


def test_gather_gradient_is_the_inverse_gather():
    layout = get_window_layout(2, (5, 6, 7), (4, 4, 4), (2, 2, 2), torch.device("cpu"))
    x = torch.randn(2, 5, 6, 7, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layout.to_windows(t), (x,))
    w = torch.randn(layout.num_windows, layout.tokens_per_window, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: layout.from_windows(t), (w,))


def test_layout_built_in_inference_mode_serves_training():
    with torch.inference_mode():
        layout = get_window_layout(1, (6, 7, 9), (4, 4, 4), (2, 2, 2), torch.device("cpu"))
        layout.masks(torch.float32)
    x = torch.randn(1, 6, 7, 9, 2, requires_grad=True)
    layout.to_windows(x).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("grid, window, shift", [((5, 6, 7), (2, 3, 4), (1, 1, 2)), ((4, 4, 3), (2, 2, 2), (0, 0, 0))])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_any_batch_layout_of_plain_ops_equals_the_batched_plan(grid, window, shift, version):
    # export (plain ops) gathers each image with the one-image plan, so the batch can stay symbolic; the
    # windows, their mask groups and the block's output are those of the batched plan
    from medswin.layers import plain_ops
    from medswin.layers.swin import SwinBlock3D
    from medswin.layers.window import AnyBatchWindowLayout, get_window_layout

    x = torch.randn(3, *grid, 12)
    fused = get_window_layout(3, grid, window, shift, x.device)
    with plain_ops():
        plain = get_window_layout(3, grid, window, shift, x.device)
    assert isinstance(plain, AnyBatchWindowLayout) and plain.image.batch == 1
    assert [(g.start, g.stop, g.mask_index) for g in plain.groups] == [
        (g.start, g.stop, g.mask_index) for g in fused.groups
    ]
    windows = plain.to_windows(x)
    assert windows.shape == fused.to_windows(x).shape
    torch.testing.assert_close(plain.from_windows(windows), x, rtol=0, atol=0)
    for group in fused.groups:  # the same windows in each group, in another order inside it
        a = fused.to_windows(x)[group.start : group.stop].flatten(1)
        b = windows[group.start : group.stop].flatten(1)
        assert torch.equal(a[a[:, 0].argsort()], b[b[:, 0].argsort()])
    block = SwinBlock3D(12, 3, window, shift, attn_version=version).eval()
    with torch.no_grad():
        expected = block(x)
        with plain_ops():
            got = block(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
