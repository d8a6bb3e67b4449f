"""FLOPs of a model's forward (or a training step) as it really runs, counted by ``torch.utils.flop_counter``.

PyTorch's counter knows ``aten.convolution``, the matmuls and the CUDA attention kernels.  medswin's CPU
paths call two ops it does not know: ``aten.mkldnn_convolution`` (channels-last convolutions, see
:class:`medswin.layers.conv.ChannelsLastConv3d`) and ``aten._scaled_dot_product_flash_attention_for_cpu``
(window attention, also what MONAI's ``use_flash_attention`` reaches on CPU).  Uncounted, a Swin UNETR
forward reads ~15x low.  :func:`count_flops` adds the formulas of both (and of the attention's backward),
so medswin and MONAI count the same network the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _mkldnn_convolution_flops(x_shape, w_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape))


def _cpu_attention_flops(q_shape, k_shape, v_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _cpu_attention_backward_flops(grad_shape, q_shape, k_shape, v_shape, *args: Any, out_shape=None, **kw: Any) -> int:
    return sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)


def extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    """The formulas ``FlopCounterMode(custom_mapping=...)`` needs for medswin's (and MONAI's flash) CPU ops."""
    formulas: dict[Any, Callable[..., int]] = {_aten.mkldnn_convolution: _mkldnn_convolution_flops}
    forward = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None:
        formulas[forward] = _cpu_attention_flops
    if backward is not None:
        formulas[backward] = _cpu_attention_backward_flops
    return formulas


def count_flops(run: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of everything ``run()`` computes (forward, and backward if it calls one), per op and in total.

    A multiply-add counts 2 FLOPs, as everywhere in PyTorch's counter; element-wise work (norms, softmax,
    activations) is not counted, by either implementation.

    Args:
        run: a callable that runs the work, e.g. ``lambda: model(x)`` with ``x`` of shape ``(B, C, D, H, W)``,
            or ``lambda: loss_fn(model(x), y).backward()`` for a training step.

    Returns:
        ``{"total": n, "<op name>": n, ...}``.
    """
    with FlopCounterMode(display=False, custom_mapping=extra_flop_formulas()) as counter:
        run()
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), **per_op}
