"""Shifted-window attention against a brute-force reference written independently of the layout code.

The reference pads, rolls, loops over every window, labels regions from coordinates, builds the
relative-position bias from coordinates and runs plain softmax attention in float64.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from medswin.layers.attention import WindowAttention3D
from medswin.layers.window import get_window_layout


def _region(p: int, size: int, w: int, s: int) -> int:
    if s == 0:
        return 0
    return 0 if p < size - w else (1 if p < size - s else 2)


def brute_force(x, attn: WindowAttention3D, window, shift):
    """Attention output for tokens ``x`` ``(B, *grid, C)`` computed window by window."""
    b, *grid, c = x.shape
    nd = len(grid)
    win = [g if g <= w else w for g, w in zip(grid, window)]
    sh = [0 if g <= w else s for g, w, s in zip(grid, window, shift)]
    padded = [math.ceil(g / w) * w for g, w in zip(grid, win)]
    xp = x.new_zeros(b, *padded, c)
    xp[(slice(None), *[slice(0, g) for g in grid])] = x
    xr = torch.roll(xp, shifts=[-s for s in sh], dims=list(range(1, nd + 1)))
    h, d = attn.num_heads, attn.head_dim
    if attn.version == "v1":
        qkv = attn.qkv(xr)
    else:
        qkv = torch.nn.functional.linear(
            xr, attn.qkv.weight, torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
        )
    q, k, v = qkv.reshape(b, *padded, 3, h, d).unbind(-3)
    out = torch.zeros_like(xr)
    cfg = attn.window_size
    for wid in itertools.product(*[range(p // w) for p, w in zip(padded, win)]):
        pos = [
            tuple(wi * w + o for wi, w, o in zip(wid, win, off)) for off in itertools.product(*[range(w) for w in win])
        ]
        n = len(pos)
        sel = [(slice(None), *p) for p in pos]
        qw = torch.stack([q[s] for s in sel], 1)  # (b, n, h, d)
        kw = torch.stack([k[s] for s in sel], 1)
        vw = torch.stack([v[s] for s in sel], 1)
        p = torch.tensor(pos)  # (n, nd) coordinates in the rolled, padded grid
        if attn.version == "v1":
            # MONAI's convention: flat in-window indices read as coordinates of the *configured* window
            flat = torch.arange(n)
            coord = torch.stack([(flat // math.prod(cfg[a + 1 :])) % cfg[a] for a in range(nd)], -1)
            rel = coord[:, None] - coord[None, :] + torch.tensor(cfg) - 1
            idx = torch.zeros(n, n, dtype=torch.long)
            for a in range(nd):
                idx = idx * (2 * cfg[a] - 1) + rel[..., a]
            bias = attn.relative_position_bias_table[idx].permute(2, 0, 1)
        else:
            rel = (p[:, None] - p[None, :]).double() / torch.tensor([max(w - 1, 1) for w in cfg]) * 8
            z = torch.sign(rel) * torch.log2(rel.abs() + 1) / 3
            bias = (16 * torch.sigmoid(attn.cpb_mlp(z))).permute(2, 0, 1)
        labels = torch.tensor([[_region(q_[a], padded[a], win[a], sh[a]) for a in range(nd)] for q_ in pos])
        differs = (labels[:, None] != labels[None, :]).any(-1)
        bias = bias + torch.where(differs, -100.0, 0.0).double()
        if attn.version == "v1":
            logits = torch.einsum("bihd,bjhd->bhij", qw, kw) / math.sqrt(d)
        else:
            qn, kn = torch.nn.functional.normalize(qw, dim=-1), torch.nn.functional.normalize(kw, dim=-1)
            scale = torch.clamp(attn.logit_scale, max=math.log(100.0)).exp().view(1, h, 1, 1)
            logits = torch.einsum("bihd,bjhd->bhij", qn, kn) * scale
        o = torch.einsum("bhij,bjhd->bihd", (logits + bias).softmax(-1), vw).reshape(b, n, c)
        o = attn.proj(o)
        for t, s in enumerate(sel):
            out[s] = o[:, t]
    out = torch.roll(out, shifts=sh, dims=list(range(1, nd + 1)))
    return out[(slice(None), *[slice(0, g) for g in grid])]


CASES = [
    ((5, 9, 11), (4, 4, 4)),  # odd, non-cubic, padded
    ((3, 6, 10), (7, 7, 7)),  # smaller than the window: window shrinks, shift 0 on those axes
    ((6, 10), (4, 4)),  # 2D
]


@pytest.mark.parametrize("grid,window", CASES)
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_window_attention_equals_brute_force(grid, window, shifted, version):
    attn = WindowAttention3D(8, 2, window, version=version).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    shift = tuple(w // 2 for w in window) if shifted else (0,) * len(window)
    x = torch.randn(2, *grid, 8, dtype=torch.double)
    layout = get_window_layout(2, grid, window, shift, x.device)
    expected = brute_force(x, attn, window, shift)
    attn.eval()
    with torch.no_grad():
        got = layout.from_windows(attn(layout.to_windows(x), layout))
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_training_path_gradients_equal_brute_force(version):
    """The memory-lean training path (flash forward + recomputing backward) gives exact gradients."""
    grid, window, shift = (5, 9, 7), (4, 4, 4), (2, 2, 2)
    attn = WindowAttention3D(8, 2, window, version=version).double().train()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(1, *grid, 8, dtype=torch.double, requires_grad=True)
    layout = get_window_layout(1, grid, window, shift, x.device)
    got = layout.from_windows(attn(layout.to_windows(x), layout))
    g = torch.randn_like(got)
    params = [x] + [p for p in attn.parameters()]
    grads = torch.autograd.grad(got, params, g)
    expected = brute_force(x, attn, window, shift)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-8)
    ref = torch.autograd.grad(expected, params, g)
    for a, r in zip(grads, ref):
        torch.testing.assert_close(a, r, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("window", [(7, 7, 7), (4, 4, 4), (5, 6, 7), (7, 7)])
def test_v2_continuous_position_bias_shapes(window):
    attn = WindowAttention3D(12, 3, window, version="v2")
    table = attn.cpb_coordinates(window)
    assert table.shape == (math.prod(2 * w - 1 for w in window), len(window))
    # d_hat = 8 d / (W - 1) reaches 8 at the window edge: log2(1 + 8) / log2(8)
    torch.testing.assert_close(table.abs().max().item(), math.log2(9) / 3)
    assert (table == 0).all(-1).sum() == 1  # only the zero offset maps to the origin
    n = math.prod(window)
    assert attn.position_bias(window).shape == (3, n, n)
    # a smaller effective window (small feature map) reuses the same MLP
    small = tuple(max(1, w - 2) for w in window)
    bias = attn.position_bias(small)
    assert bias.shape == (3, math.prod(small), math.prod(small))
    assert torch.isfinite(bias).all() and (bias >= 0).all() and (bias <= 16).all()


def test_v2_logit_scale_is_clamped_at_ln_100():
    attn = WindowAttention3D(8, 2, (4, 4, 4), version="v2")
    with torch.no_grad():
        attn.logit_scale.fill_(10.0)
    layout = get_window_layout(1, (4, 4, 4), (4, 4, 4), (0, 0, 0), torch.device("cpu"))
    out = attn(layout.to_windows(torch.randn(1, 4, 4, 4, 8)), layout)
    assert torch.isfinite(out).all()


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="divisible"):
        WindowAttention3D(10, 3, (7, 7, 7))
    with pytest.raises(ValueError, match="v1"):
        WindowAttention3D(12, 3, (7, 7, 7), version="v3")
