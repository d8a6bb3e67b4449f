"""Fused instance norm + LeakyReLU and the channels-last conv blocks against PyTorch / MONAI."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetrBasicBlock, UnetrUpBlock

from medswin.layers import norm as norm_module
from medswin.layers.conv import ChannelsLastConv3d, ResConvBlock, UpBlock
from medswin.layers.norm import instance_norm_act

CL = torch.channels_last_3d


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
@pytest.mark.parametrize("slope", [0.01, None])
def test_instance_norm_act_matches_torch(fmt, slope):
    x = (torch.randn(2, 5, 9, 10, 11) * 3 + 2).contiguous(memory_format=fmt)
    r = torch.randn(2, 5, 9, 10, 11)
    ref = F.instance_norm(x.double()) + r.double()
    ref = F.leaky_relu(ref, slope) if slope is not None else ref
    out = instance_norm_act(x, r, slope)
    assert out.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(out.double(), ref, atol=2e-6, rtol=1e-5)


def test_instance_norm_act_precise_on_large_offset_maps():
    # the case where channels-last batch_norm drifts by ~4e-4: large map, mean far from zero
    x = (torch.randn(1, 8, 64, 64, 64) * 3 + 5).contiguous(memory_format=CL)
    ref = F.leaky_relu(F.instance_norm(x.double()), 0.01)
    torch.testing.assert_close(instance_norm_act(x).double(), ref, atol=5e-6, rtol=1e-5)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("chunk", [1 << 20, 7])
def test_instance_norm_act_gradients(fmt, inplace, chunk, monkeypatch):
    monkeypatch.setattr(
        norm_module, "_CHUNK_ELEMENTS", chunk
    )  # 7: many chunks, uneven last one (24 = 3 x 7 + 3 per map)
    x = torch.randn(2, 3, 3, 4, 2, dtype=torch.double).contiguous(memory_format=fmt).requires_grad_()
    r = torch.randn(2, 3, 3, 4, 2, dtype=torch.double).contiguous(memory_format=fmt).requires_grad_()
    # inplace needs a temporary input (as a convolution output is)
    assert torch.autograd.gradcheck(lambda a, b: instance_norm_act(a * 1.0, b, 0.01, inplace=inplace), (x, r))
    assert torch.autograd.gradcheck(lambda a: instance_norm_act(a * 1.0, None, None, inplace=inplace), (x,))


def test_bf16_keeps_fp32_statistics():
    x = torch.randn(1, 4, 16, 16, 16) * 10 + 50
    out = instance_norm_act(x.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = F.leaky_relu(F.instance_norm(x), 0.01)
    assert (out.float() - ref).abs().max() < 0.05


@pytest.mark.parametrize("cin", [1, 2, 6])
def test_channels_last_conv_equals_conv3d(cin):
    conv = ChannelsLastConv3d(cin, 8, 3, padding=1, bias=False)
    x = torch.randn(1, cin, 10, 12, 14)
    out = conv(x)
    assert out.is_contiguous(memory_format=CL)
    torch.testing.assert_close(out, F.conv3d(x, conv.weight, padding=1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cin,cout", [(1, 6), (6, 6)])
def test_res_conv_block_equals_monai(cin, cout):
    ref = UnetrBasicBlock(3, cin, cout, kernel_size=3, stride=1, norm_name="instance", res_block=True)
    ours = ResConvBlock(cin, cout)
    ours.load_state_dict(
        {k.replace("layer.", "").replace(".conv.weight", ".weight"): v for k, v in ref.state_dict().items()}
    )
    x = torch.randn(2, cin, 12, 10, 8)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_up_block_equals_monai():
    ref = UnetrUpBlock(3, 12, 6, kernel_size=3, upsample_kernel_size=2, norm_name="instance", res_block=True)
    ours = UpBlock(12, 6)
    ours.load_state_dict({k.replace(".conv.weight", ".weight"): v for k, v in ref.state_dict().items()})
    x, skip = torch.randn(1, 12, 4, 5, 6), torch.randn(1, 6, 8, 10, 12)
    torch.testing.assert_close(ours(x, skip), ref(x, skip), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spatial", [(4, 4, 2), (8, 8, 2), (4, 4, 1), (4, 4, 4)])
def test_strided_conv_under_bf16_autocast_matches_float32(spatial):
    # oneDNN's bf16 CPU kernel returns garbage (errors ~10, NaN) for a stride-2 conv whose output is
    # one voxel thick along the last axis; it made CSwin UNet's last merge NaN in bf16 training
    torch.manual_seed(0)
    conv = ChannelsLastConv3d(96, 192, kernel_size=3, stride=2, padding=1)
    x = torch.randn(4, 96, *spatial)
    with torch.no_grad():
        ref = conv(x.bfloat16().float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("spatial", [(2, 2, 1), (2, 1, 2), (1, 2, 2), (2, 2, 2), (2, 2, 4)])
def test_bottleneck_conv_gradients_under_bf16_autocast_match_float32(spatial):
    # oneDNN's bf16 weight gradient of a stride-1 3x3x3 conv on a map one voxel thick (Swin UNETR's 2x2x1
    # bottleneck at 64x64x32) returned 1e33 or inf in most calls: half the demo's bf16 steps were non-finite.
    # Several calls, because the garbage depends on what memory the kernel is handed.
    torch.manual_seed(0)
    for _ in range(8):
        conv = ChannelsLastConv3d(192, 192, kernel_size=3, padding=1, bias=False)
        reference = ChannelsLastConv3d(192, 192, kernel_size=3, padding=1, bias=False)
        reference.load_state_dict(conv.state_dict())
        x = torch.randn(4, 192, *spatial)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x).float().square().mean().backward()
        reference(x).square().mean().backward()
        assert torch.isfinite(conv.weight.grad).all()
        scale = float(reference.weight.grad.abs().max())  # bf16 rounding: a few % of it; the garbage: 1e25+
        assert float((conv.weight.grad - reference.weight.grad).abs().max()) < 0.05 * scale
