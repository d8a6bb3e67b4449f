"""Residual convolution blocks of the UNETR family, run in channels-last memory format.

``ResConvBlock`` and ``UpBlock`` compute exactly what MONAI's ``UnetResBlock`` /
``UnetrBasicBlock(res_block=True)`` and ``UnetrUpBlock`` compute (instance norm without affine,
LeakyReLU 0.01, bias-free convolutions, a 1x1 projection on the residual when channels change),
with the same parameter shapes, but:

* every convolution sees channels-last input (oneDNN's fast path on CPU: 1.3-5x faster 3x3x3
  convolutions, 3-5x faster 1x1x1 and transposed convolutions than the contiguous layout);
* norm + residual add + activation are one fused op (:func:`~medswin.layers.norm.instance_norm_act`)
  that keeps fewer full-resolution tensors for backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .norm import instance_norm_act
from .plain import use_plain_ops


class ChannelsLastConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs on oneDNN's channels-last kernels on CPU and returns channels-last output.

    For float32 on CPU PyTorch picks a slow im2col kernel with a contiguous output whenever
    ``B * C * D * H`` of the input is small (every convolution of a tiny model at 64^3, the
    bottleneck of any model); here oneDNN is called directly in that case.  1-3 input channels
    (the first convolution on a CT or MRI volume) stay on PyTorch's kernel, which is faster there,
    and the output is converted.  Parameters and results are those of ``nn.Conv3d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, D, H, W)`` -> ``(B, out, D', H', W')`` in channels-last memory."""
        x = to_channels_last(x)
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.shape[1] >= 4
            and self.padding_mode == "zeros"
            and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available()
            and not use_plain_ops()  # export: the standard convolution op
        ):
            return torch.ops.aten.mkldnn_convolution(
                x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups
            )
        if x.device.type == "cpu" and self._hits_cpu_bf16_bug(x):
            dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
            with torch.autocast("cpu", enabled=False):
                bias = None if self.bias is None else self.bias.float()
                out = self._conv_forward(x.float(), self.weight.float(), bias)
            return to_channels_last(out.to(dtype))
        return to_channels_last(self._conv_forward(x, self.weight, self.bias))

    def _hits_cpu_bf16_bug(self, x: torch.Tensor) -> bool:
        """True where oneDNN's bf16/fp16 CPU kernels return garbage (torch 2.13): a convolution whose output
        is at most two voxels along an axis.  Strided (k3 s2 p1 on W=2, 96 -> 192 channels): forward errors of
        10 or NaN; stride 1 (k3 p1 on a 2x2x1 or 2x2x2 map, 192 channels): weight gradients of 1e33 or inf in
        most calls, which made half the bf16 training steps of the demo non-finite (4x4x2, 3x3x3 were
        correct; 2 is the conservative bound).  Such outputs are tiny, so they run in float32 instead."""
        low = torch.is_autocast_enabled("cpu") or x.dtype in (torch.bfloat16, torch.float16)
        if not low:
            return False
        for size, pad, dil, k, s in zip(x.shape[2:], self.padding, self.dilation, self.kernel_size, self.stride):
            if (size + 2 * pad - dil * (k - 1) - 1) // s + 1 <= 2:
                return True
        return False


def _conv(spatial_dims: int, cin: int, cout: int, kernel: int) -> nn.Module:
    if spatial_dims == 3:
        return ChannelsLastConv3d(cin, cout, kernel_size=kernel, padding=kernel // 2, bias=False)
    return nn.Conv2d(cin, cout, kernel_size=kernel, padding=kernel // 2, bias=False)


def _factor(upsample: int | Sequence[int], spatial_dims: int) -> int | tuple[int, ...]:
    """Validate an up-sampling factor: a positive int, or ``spatial_dims`` positive ints."""
    if isinstance(upsample, int):
        factor: int | tuple[int, ...] = upsample
        values = [upsample]
    else:
        factor = tuple(int(u) for u in upsample)
        values = list(factor)
        if len(factor) != spatial_dims:
            raise ValueError(f"upsample needs an int or {spatial_dims} per-axis factors, got {tuple(upsample)}")
    if any(v < 1 for v in values):
        raise ValueError(f"upsample factors must be positive, got {upsample!r}")
    return factor


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in channels-last memory format (a no-op when it already is)."""
    fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
    return x.contiguous(memory_format=fmt)


class ResConvBlock(nn.Module):
    """Residual block ``lrelu(IN(conv2(lrelu(IN(conv1 x)))) + residual)`` (MONAI ``UnetResBlock``).

    ``residual`` is ``x`` when channels match, else ``IN(conv3(x))`` with a 1x1 ``conv3``.
    Maps ``(B, in, *spatial)`` -> ``(B, out, *spatial)`` with stride 1 and kernel ``kernel_size``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        spatial_dims: int = 3,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.conv1 = _conv(spatial_dims, in_channels, out_channels, kernel_size)
        self.conv2 = _conv(spatial_dims, out_channels, out_channels, kernel_size)
        self.conv3 = _conv(spatial_dims, in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in, *spatial)`` -> ``(B, out, *spatial)`` (channels-last memory)."""
        x = to_channels_last(x)
        # convolution outputs are temporaries: normalise them in place
        h = instance_norm_act(self.conv1(x), None, self.negative_slope, inplace=True)
        h = self.conv2(h)
        residual = x if self.conv3 is None else instance_norm_act(self.conv3(x), None, None, inplace=True)
        return instance_norm_act(h, residual, self.negative_slope, inplace=True)


class UpBlock(nn.Module):
    """Decoder step (MONAI ``UnetrUpBlock``): transposed conv x2, concatenate the skip, ResConvBlock.

    ``upsample`` is the factor of the transposed convolution (kernel = stride): an int (2, MONAI's
    ``upsample_kernel_size``) or one factor per axis, e.g. ``(1, 2, 2)`` to keep the slice axis of
    an anisotropic encoder.

    ``forward(x, skip)``: ``x`` ``(B, in, *s)`` and ``skip`` ``(B, out, *(s * upsample))`` ->
    ``(B, out, *(s * upsample))``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, spatial_dims: int = 3, upsample: int | Sequence[int] = 2
    ) -> None:
        super().__init__()
        factor = _factor(upsample, spatial_dims)
        cls = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        self.transp_conv = cls(in_channels, out_channels, kernel_size=factor, stride=factor, bias=False)
        self.conv_block = ResConvBlock(2 * out_channels, out_channels, spatial_dims=spatial_dims)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``, concatenate ``skip`` on channels, refine."""
        up = self.transp_conv(to_channels_last(x))
        if up.shape[2:] != skip.shape[2:]:
            raise ValueError(f"upsampled map {tuple(up.shape[2:])} does not match skip {tuple(skip.shape[2:])}")
        return self.conv_block(torch.cat([up, to_channels_last(skip)], 1))


class OutBlock(nn.Module):
    """1x1 convolution to class logits (MONAI ``UnetOutBlock``)."""

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 3) -> None:
        super().__init__()
        cls = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.conv = cls(in_channels, out_channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> ``(B, out, *spatial)``."""
        return self.conv(to_channels_last(x))
