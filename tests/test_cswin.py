"""CSwin UNet (3D): cross-shaped-window attention against a brute-force reference, LePE locality,
padding, encoder shapes, anisotropic strides and the model contract.

The reference attends over *all* tokens of the grid with an explicit boolean mask built from
coordinates (token i may attend token j iff both lie in the same stripe of the group's axis) and
computes LePE token by token from the 27 neighbours that lie in the same stripe, in float64.  It
uses none of the window gathering code.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import medswin.models.cswin_unet  # noqa: F401  (registers the presets)
from medswin.layers.conv import UpBlock
from medswin.layers.cswin import CSwinAttention3D
from medswin.layers.decoder import UNETRDecoder
from medswin.models import create_model, model_info
from medswin.models.cswin_unet import CSwinUNet


def _stripe_ids(coords: torch.Tensor, axis: int | None, sw: int | None) -> torch.Tensor:
    """``(T, 3)`` stripe index of every token: coordinates // sw on the axes across the stripe."""
    if axis is None:
        return torch.zeros_like(coords)
    ids = coords // sw
    ids[:, axis] = 0
    return ids


def brute_force(attn: CSwinAttention3D, x: torch.Tensor) -> torch.Tensor:
    """Pre-projection output ``(B, D, H, W, C)`` (the groups concatenated) for tokens ``x``."""
    b, *grid, c = x.shape
    t = math.prod(grid)
    coords = torch.tensor(list(itertools.product(*[range(g) for g in grid])))  # (T, 3), row-major
    qkv = attn.qkv(x).reshape(b, t, 3, c)
    cb, heads, hd = attn.branch_dim, attn.branch_heads, attn.head_dim
    outs = []
    for i, axis in enumerate(attn.axes):
        q, k, v = qkv[..., i * cb : (i + 1) * cb].unbind(2)  # (b, T, cb)
        ids = _stripe_ids(coords, axis, attn.stripe_width)
        same = (ids[:, None] == ids[None, :]).all(-1)  # (T, T)
        logits = torch.einsum("bihd,bjhd->bhij", q.view(b, t, heads, hd), k.view(b, t, heads, hd)) / math.sqrt(hd)
        probs = logits.masked_fill(~same, -math.inf).softmax(-1)
        o = torch.einsum("bhij,bjhd->bihd", probs, v.view(b, t, heads, hd)).reshape(b, t, cb)
        # LePE: depthwise 3x3x3 cross-correlation over neighbours inside the same stripe only
        conv = attn.lepe[i]
        lepe = conv.bias.expand(b, t, cb).clone()
        size = torch.tensor(grid)
        for off in itertools.product((-1, 0, 1), repeat=3):
            nb = coords + torch.tensor(off)
            inside = ((nb >= 0) & (nb < size)).all(-1)
            nbc = nb.clamp(min=0).minimum(size - 1)
            flat = (nbc[:, 0] * grid[1] + nbc[:, 1]) * grid[2] + nbc[:, 2]
            ok = inside & same[torch.arange(t), flat]
            w = conv.weight[:, 0, off[0] + 1, off[1] + 1, off[2] + 1]  # (cb,)
            lepe = lepe + torch.where(ok[None, :, None], v[:, flat] * w, 0.0)
        outs.append(o + lepe)
    return torch.cat(outs, -1).view(b, *grid, c)


def _randomize(module: nn.Module, std: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


@pytest.mark.parametrize(
    "grid,sw",
    [
        ((5, 7, 9), 2),  # uneven, non-cubic: every stripe group pads
        ((4, 6, 3), 4),  # stripe wider than some axes: the window shrinks to the map
        ((3, 4, 5), None),  # global last-stage branch
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stripe_attention_equals_brute_force(grid, sw, dtype):
    attn = CSwinAttention3D(18, 6, sw).to(dtype)  # 3 groups of 6 channels and 2 heads (head dim 3)
    _randomize(attn)
    x = torch.randn(2, *grid, 18, dtype=dtype)
    with torch.no_grad():
        pre = brute_force(attn.double(), x.double())
        expected = attn.proj(pre).to(dtype)
        attn.to(dtype)
        got = attn(x)
        # each axis group on its own (projection removed)
        proj, attn.proj = attn.proj, nn.Identity()
        groups = attn(x)
        attn.proj = proj
    tol = dict(atol=1e-10, rtol=1e-8) if dtype == torch.float64 else dict(atol=2e-5, rtol=2e-5)
    cb = attn.branch_dim
    for i, axis in enumerate(attn.axes):
        sl = slice(i * cb, (i + 1) * cb)
        torch.testing.assert_close(groups[..., sl], pre[..., sl].to(dtype), **tol, msg=lambda m: f"axis {axis}: {m}")
    torch.testing.assert_close(got, expected, **tol)


def test_training_gradients_equal_brute_force():
    attn = CSwinAttention3D(12, 3, 2).double().train()
    _randomize(attn)
    x = torch.randn(1, 3, 5, 4, 12, dtype=torch.double, requires_grad=True)
    params = [x, *attn.parameters()]
    out = attn(x)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, params, g)
    ref = torch.autograd.grad(attn.proj(brute_force(attn, x)), params, g)
    for a, r in zip(grads, ref):
        torch.testing.assert_close(a, r, atol=1e-9, rtol=1e-7)


def _lepe_term(attn: CSwinAttention3D, index: int, qkv: torch.Tensor, grid) -> torch.Tensor:
    """The LePE part of a branch's output: full output minus the output with LePE zeroed."""
    conv = attn.lepe[index]
    full = attn.branch(index, qkv, grid)
    saved = conv.weight.detach().clone(), conv.bias.detach().clone()
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        plain = attn.branch(index, qkv, grid)
        conv.weight.copy_(saved[0])
        conv.bias.copy_(saved[1])
    return full - plain


@pytest.mark.parametrize("index", [0, 1, 2])
def test_lepe_stays_inside_its_window(index):
    """Changing V at the last voxel of one stripe leaves the LePE of the next stripe untouched."""
    attn = CSwinAttention3D(6, 3, 2).double()
    _randomize(attn)
    grid = (4, 4, 4)  # windows: the whole axis `index`, 2 voxels along the two others
    qkv = torch.randn(1, *grid, 3, 2, dtype=torch.double)
    across = (index + 1) % 3  # an axis across the stripe
    pos = [1, 1, 1]  # last voxel of the first window along `across`
    nb = list(pos)
    nb[across] = 2  # its neighbour, first voxel of the next window
    changed = qkv.clone()
    changed[(0, *pos, 2)] += 5.0  # V of that voxel
    with torch.no_grad():
        before, after = _lepe_term(attn, index, qkv, grid), _lepe_term(attn, index, changed, grid)
    assert not torch.allclose(before[(0, *pos)], after[(0, *pos)])  # its own window sees the change
    torch.testing.assert_close(before[(0, *nb)], after[(0, *nb)], atol=0, rtol=0)
    # whereas one depthwise convolution over the whole volume would leak across the border
    conv = attn.lepe[index]
    whole = [conv(t[..., 2, :].permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1) for t in (qkv, changed)]
    assert not torch.allclose(whole[0][(0, *nb)], whole[1][(0, *nb)])


@pytest.mark.parametrize("index", [0, 1, 2])
def test_padded_tail_does_not_reach_real_tokens(index):
    """Whatever fills the padding (q, k and v alike), outputs at real voxels are unchanged."""
    attn = CSwinAttention3D(12, 3, 2).double()
    _randomize(attn)
    grid = (5, 7, 9)
    window = attn.window(index, grid)
    padded = tuple(-(-g // w) * w for g, w in zip(grid, window))
    assert padded != grid
    real = (slice(None), slice(0, grid[0]), slice(0, grid[1]), slice(0, grid[2]))
    zeros = torch.zeros(2, *padded, 3, 4, dtype=torch.double)
    zeros[real] = torch.randn(2, *grid, 3, 4, dtype=torch.double)
    noisy = zeros.clone()
    tail = torch.ones(padded, dtype=torch.bool)
    tail[real[1:]] = False
    noisy[:, tail] = 50.0 * torch.randn_like(noisy[:, tail])
    with torch.no_grad():
        a = attn.branch(index, zeros, grid)[real]
        b = attn.branch(index, noisy, grid)[real]
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_configuration_errors():
    with pytest.raises(ValueError, match="num_heads 4 is not divisible by 3"):
        CSwinAttention3D(12, 4, 2)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CSwinAttention3D(10, 3, 2)
    CSwinAttention3D(16, 4, None)  # the global branch needs no split
    with pytest.raises(ValueError, match="divisible by 3"):
        CSwinUNet(1, 2, feature_size=16, num_heads=(4, 8, 16, 32))
    with pytest.raises(ValueError, match="merge_strides"):
        CSwinUNet(1, 2, merge_strides=[2, 2])


def test_encoder_features_match_swin_unetr_shapes():
    x = torch.randn(1, 1, 64, 64, 64)
    ours = create_model("cswin_unet_tiny", in_channels=1, out_channels=2).encoder
    swin = create_model("swin_unetr_tiny", in_channels=1, out_channels=2).encoder
    with torch.no_grad():
        a, b = ours(x), swin(x)
    assert [f.shape for f in a] == [f.shape for f in b]
    assert ours.out_channels == swin.out_channels and ours.reductions == swin.reductions == [2, 4, 8, 16, 32]
    assert all(f.is_contiguous(memory_format=torch.channels_last_3d) for f in a)


def test_anisotropic_strides():
    model = create_model(
        "cswin_unet_tiny",
        in_channels=1,
        out_channels=2,
        stem_stride=(1, 2, 2),
        merge_strides=[(1, 2, 2), (1, 2, 2), 2, 2],
    ).eval()
    assert model.size_divisor == (4, 32, 32)
    assert model.encoder.reductions == [(1, 2, 2), (1, 4, 4), (1, 8, 8), (2, 16, 16), (4, 32, 32)]
    assert tuple(model.decoder.up_blocks[4].transp_conv.weight.shape[2:]) == (1, 2, 2)
    x = torch.randn(1, 1, 16, 64, 64)
    with torch.no_grad():
        feats = model.encoder(x)
        out = model(x)
    assert [tuple(f.shape[2:]) for f in feats] == [(16, 32, 32), (16, 16, 16), (16, 8, 8), (8, 4, 4), (4, 2, 2)]
    assert out.shape == (1, 2, 16, 64, 64)
    with pytest.raises(ValueError, match=r"axis 0 = 18 \(multiple of 4 needed\).*\(20, 64, 64\)"):
        model(torch.randn(1, 1, 18, 64, 64))
    with pytest.raises(ValueError, match="bottleneck"):
        model.size_rule.check((4, 32, 32))
    iso = create_model("cswin_unet_tiny", in_channels=1, out_channels=2)
    assert iso.size_divisor == 32 and isinstance(iso.size_divisor, int)
    with pytest.raises(ValueError, match=r"multiple of 32"):
        iso.size_rule.check((64, 64, 48))


def test_decoder_per_level_upsample_is_backward_compatible():
    default = UNETRDecoder(1, [6, 12, 24, 48, 96], 2)
    explicit = UNETRDecoder(1, [6, 12, 24, 48, 96], 2, upsample=[2, 2, 2, 2, 2])
    shapes = [{k: v.shape for k, v in d.state_dict().items()} for d in (default, explicit)]
    assert shapes[0] == shapes[1]
    block = UpBlock(4, 2, upsample=(1, 2, 2))
    assert block(torch.randn(1, 4, 3, 4, 5), torch.randn(1, 2, 3, 8, 10)).shape == (1, 2, 3, 8, 10)
    with pytest.raises(ValueError, match="5 per-level"):
        UNETRDecoder(1, [6, 12, 24, 48, 96], 2, upsample=(1, 2, 2))
    with pytest.raises(ValueError, match="per-axis"):
        UpBlock(4, 2, upsample=(2, 2))


def test_model_maps_shapes_trains_every_parameter_and_is_deterministic():
    model = create_model("cswin_unet_tiny", in_channels=2, out_channels=3).train()
    x = torch.randn(1, 2, 64, 64, 64)
    out = model(x)
    assert out.shape == (1, 3, 64, 64, 64)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.isfinite(a).all() and torch.equal(a, b)


def test_presets_registered():
    for name in ("cswin_unet_tiny", "cswin_unet_small", "cswin_unet_base"):
        info = model_info(name, in_channels=1, out_channels=14)
        assert info["size_divisor"] == 32 and info["default_roi"] == (96, 96, 96) and "CSwin" in info["paper"]
    model = create_model("cswin_unet_base", in_channels=1, out_channels=14, use_checkpoint=True)
    assert model.config["stripe_widths"] == (1, 2, 6, None) and model.config["depths"] == (2, 2, 6, 2)
