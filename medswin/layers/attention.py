"""Window attention for Swin blocks (2D or 3D), computed with ``scaled_dot_product_attention``.

``WindowAttention3D`` (3D windows; 2D windows work the same) implements both position-bias flavours:

* ``version="v1"`` (Swin V1, MONAI's ``WindowAttention``): ``softmax(q k^T / sqrt(d) + B + M) v``
  with a learned table ``B`` of shape ``(prod(2W-1), heads)`` indexed by relative offsets;
* ``version="v2"`` (Swin V2): scaled cosine attention ``cos(q, k) * exp(min(t_h, ln 100)) + B``
  with ``B = 16 sigmoid(MLP(z))`` from log-spaced relative coordinates (continuous position bias),
  separate q and v biases and no k bias.

The bias is gathered once per forward (``(heads, N, N)``) and shared by all windows; the shift
mask (``M``) comes from the :class:`~medswin.layers.window.WindowLayout`, one ``(N, N)`` mask per
window type, so SDPA receives a broadcast ``(1, heads, N, N)`` additive mask per group of windows.
Nothing of size ``windows x N x N`` is ever materialised or kept for backward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .plain import use_plain_ops
from .window import AnyBatchWindowLayout, WindowLayout, relative_offsets, relative_position_index


# elements of the (chunk, heads, N, N) temporaries in the recomputing backward (~4 MB in fp32)
_BACKWARD_CHUNK_ELEMENTS = 1 << 20

# the CPU flash kernel also returns the softmax log-sum-exp, which spares the backward a softmax
_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class _BiasedWindowAttention(torch.autograd.Function):
    """Window attention with a learnable additive bias, memory-lean in training (CPU).

    Forward runs the fused flash kernel per window group (nothing ``N x N`` is kept, only the
    ``(nw, heads, N)`` log-sum-exp).  Backward recomputes the attention probabilities chunk by
    chunk and returns gradients for q, k, v and the ``(heads, N, N)`` bias.  PyTorch's fused CPU
    kernels cannot return a gradient for an additive mask, so without this it falls back to the
    math path that stores every window's ``heads x N x N`` probabilities for backward (~0.5 GB
    per block at 96^3, F=48).
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, masks, groups, scale):  # type: ignore[override]
        # detached: SDPA refuses its fused kernels when any input requires grad, grad mode or not
        out, lse = _attend(q.detach(), k.detach(), v.detach(), bias.detach(), masks, groups, scale, with_lse=True)
        ctx.save_for_backward(q, k, v, bias, masks, out, lse if lse is not None else out.new_empty((0,)))
        ctx.groups, ctx.scale, ctx.has_lse = groups, scale, lse is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, bias, masks, out, lse = ctx.saved_tensors
        nw, h, n, d = q.shape
        acc = torch.promote_types(q.dtype, torch.float32)  # softmax and every gradient never below fp32
        scale = ctx.scale
        grad_out = grad_out.view(nw, n, h, d).transpose(1, 2).to(acc)
        delta = (grad_out * out.view(nw, n, h, d).transpose(1, 2).to(acc)).sum(-1, keepdim=True)
        ones = grad_out.new_ones(()).expand(nw, h, n, 1)
        q_scaled, k_acc = q.to(acc) * scale, k.to(acc)
        # two subtractions folded into the matmuls: [q s, -lse] [k, 1]^T = q k^T s - lse (log-probabilities
        # before the bias) and [dO, -delta] [v, 1]^T = dP - delta (the softmax backward's bracket)
        qx = torch.cat([q_scaled, -lse.to(acc).unsqueeze(-1)], -1) if ctx.has_lse else q_scaled
        kx = torch.cat([k_acc, ones], -1) if ctx.has_lse else k_acc
        gx = torch.cat([grad_out, -delta], -1)
        vx = torch.cat([v.to(acc), ones], -1)
        # the three (N x N) @ (N x d) products are computed transposed, (d x N) @ (N x N): for a small head
        # dimension (d = 4 in the tiny presets) MKL runs that shape ~5x faster
        grad_out_t, q_scaled_t = grad_out.transpose(-1, -2), q_scaled.transpose(-1, -2)
        k_scaled_t = (k_acc * scale).transpose(-1, -2)
        dq_t, dk_t, dv_t = (q.new_empty((nw, h, d, n), dtype=acc) for _ in range(3))
        dbias = torch.zeros(bias.shape, dtype=acc, device=bias.device)
        chunk = max(1, _BACKWARD_CHUNK_ELEMENTS // (h * n * n))
        for group in ctx.groups:
            full = bias.to(acc)
            if group.mask_index is not None:
                # masked pairs (MONAI's -100) get probability exactly 0: left at e^-100 they are denormals,
                # which x86 multiplies ~5-10x slower
                full = full.masked_fill(masks[group.mask_index] < 0, -math.inf)
            for start in range(group.start, group.stop, chunk):
                sl = slice(start, min(start + chunk, group.stop))
                logits = torch.matmul(qx[sl], kx[sl].transpose(-1, -2)).add_(full)
                probs = logits.exp_() if ctx.has_lse else torch.softmax(logits, -1)
                dv_t[sl] = torch.matmul(grad_out_t[sl], probs)
                ds = torch.matmul(gx[sl], vx[sl].transpose(-1, -2)).mul_(probs)  # softmax backward, in place
                dbias += ds.sum(0)
                dq_t[sl] = torch.matmul(k_scaled_t[sl], ds.transpose(-1, -2))
                dk_t[sl] = torch.matmul(q_scaled_t[sl], ds)
        grads = (t.transpose(-1, -2).to(q.dtype) for t in (dq_t, dk_t, dv_t))
        return *grads, dbias.to(bias.dtype), None, None, None


def _attend(q, k, v, bias, masks, groups, scale, dropout_p=0.0, with_lse=False):
    """Fused SDPA per window group; ``(nw, h, N, d)`` inputs -> ``(nw, N, h * d)``.

    With ``with_lse=True`` returns ``(out, lse)``: the ``(nw, h, N)`` softmax log-sum-exp from the
    CPU flash kernel, or ``None`` where that kernel is not available.
    """
    nw, h, n, d = q.shape
    use_flash = with_lse and _CPU_FLASH is not None and q.device.type == "cpu" and dropout_p == 0.0
    outs, lses = [], []
    for group in groups:
        mask = bias if group.mask_index is None else bias + masks[group.mask_index]
        sl = slice(group.start, group.stop)
        mask = mask.to(q.dtype).unsqueeze(0)
        if use_flash:
            o, lse = _CPU_FLASH(q[sl], k[sl], v[sl], 0.0, False, attn_mask=mask, scale=scale)
            lses.append(lse)
        else:
            o = F.scaled_dot_product_attention(q[sl], k[sl], v[sl], attn_mask=mask, dropout_p=dropout_p, scale=scale)
        outs.append(o.transpose(1, 2))
    out = (outs[0] if len(outs) == 1 else torch.cat(outs, 0)).reshape(nw, n, h * d)
    if not with_lse:
        return out
    return out, (torch.cat(lses, 0) if use_flash else None)


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside (shifted) windows; 3D windows, or 2D for Swin-X2S's encoder.

    Args:
        dim: token channels ``C``.
        num_heads: attention heads (``C`` must be divisible by it).
        window_size: configured window, length 2 or 3 (the effective window may be smaller on
            small feature maps; see :func:`~medswin.layers.window.effective_window`).
        qkv_bias: learn biases on q, k, v (v1) or on q and v (v2).
        attn_drop: dropout on attention probabilities (training only).
        proj_drop: dropout after the output projection.
        version: ``"v1"`` (relative position bias table) or ``"v2"`` (cosine attention + CPB).

    Input ``(num_windows, N, C)`` windows plus their layout; output has the same shape.

    MONAI quirk kept for weight compatibility (v1 only): when the effective window is smaller than
    the configured one, MONAI indexes the bias with ``relative_position_index[:n, :n]`` of the
    *configured* window; we do the same so MONAI-trained weights give MONAI's outputs.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        version: str = "v1",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if version not in ("v1", "v2"):
            raise ValueError(f"attention version must be 'v1' or 'v2', got {version!r}")
        self.dim, self.num_heads, self.version = dim, num_heads, version
        self.window_size = tuple(int(w) for w in window_size)
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        if version == "v1":
            n_offsets = math.prod(2 * w - 1 for w in self.window_size)
            self.relative_position_bias_table = nn.Parameter(torch.zeros(n_offsets, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
            self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
            self.cpb_mlp = nn.Sequential(
                nn.Linear(len(self.window_size), 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False)
            )
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    # ------------------------------------------------------------------ position bias
    def position_bias(self, window: Sequence[int]) -> torch.Tensor:
        """Relative position bias ``(heads, N, N)`` for an effective ``window`` (``N = prod(window)``)."""
        n = math.prod(window)
        if self.version == "v1":
            index = self.relative_position_index[:n, :n]  # MONAI's convention, see class docstring
            bias = self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1)
            return bias.permute(2, 0, 1)
        table = self.cpb_mlp(self.cpb_coordinates(window).to(self.logit_scale.device, self.logit_scale.dtype))
        index = relative_position_index(window).to(table.device)
        bias = table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1)
        return 16.0 * torch.sigmoid(bias)

    def cpb_coordinates(self, window: Sequence[int]) -> torch.Tensor:
        """Log-spaced relative coordinates ``(prod(2W-1), nd)`` fed to the CPB MLP (Swin V2).

        Offsets ``d`` are normalised by the *configured* window, ``8 d / (W - 1)``, so an offset
        means the same to the MLP at every feature-map size, then ``sign * log2(1 + |.|) / 3``.
        """
        d = relative_offsets(window).double()  # computed in float64, cast to the model's dtype by the caller
        denom = torch.tensor([max(w - 1, 1) for w in self.window_size], dtype=torch.float64)
        d = d / denom * 8.0
        return torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8.0)

    # ------------------------------------------------------------------ forward
    def forward(self, windows: torch.Tensor, layout: WindowLayout | AnyBatchWindowLayout) -> torch.Tensor:
        """Attend inside each window: ``(num_windows, N, C)`` -> ``(num_windows, N, C)``."""
        nw, n, c = windows.shape
        if self.version == "v1":
            qkv = self.qkv(windows)
        else:
            bias = None
            if self.q_bias is not None:
                bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            qkv = F.linear(windows, self.qkv.weight, bias)
        q, k, v = qkv.view(nw, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        pos_bias = self.position_bias(layout.window).contiguous()
        if self.version == "v2":
            scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            q = F.normalize(q, dim=-1) * scale.to(q.dtype)
            k = F.normalize(k, dim=-1)
            sdpa_scale = 1.0
        else:
            sdpa_scale = self.head_dim**-0.5
        masks = layout.masks(torch.float32)
        if self.training and self.attn_drop > 0:  # rare: PyTorch's own path, which stores probabilities
            out = _attend(q, k, v, pos_bias, masks, layout.groups, sdpa_scale, self.attn_drop)
        elif (
            windows.device.type == "cpu"
            and not use_plain_ops()  # export / tracing: SDPA with autograd's own backward
            and torch.is_grad_enabled()
            and any(t.requires_grad for t in (q, k, v, pos_bias))
        ):
            out = _BiasedWindowAttention.apply(q, k, v, pos_bias, masks, layout.groups, sdpa_scale)
        else:  # inference, or CUDA, whose memory-efficient kernel differentiates the bias itself
            out = _attend(q, k, v, pos_bias, masks, layout.groups, sdpa_scale)
        return self.proj_drop(self.proj(out))
