"""Mixed-precision policy shared by inference, training, pretraining and adaptation.

``amp="auto"`` means: bf16 autocast where the hardware computes bf16 natively (CUDA with bf16
support; CPUs with AVX512-BF16 or AMX, where oneDNN runs bf16 convolutions and matmuls several
times faster than fp32), float32 elsewhere.  MONAI bundles switch AMP off on CPU; turning it on
where it pays is a deliberate, user-visible default, and ``amp="fp32"`` restores exact float32.

Asking for ``bf16`` where the hardware has no native bf16 (a CPU without AVX512-BF16/AMX, a GPU
before Ampere) still works, emulated, but many times slower: one warning names the processor and
the expected slow-down.  ``fp16`` on the CPU is refused (PyTorch's CPU fp16 kernels are slower still
and numerically fragile); use bf16 or fp32 there.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI parser reads AMP_CHOICES without it
    import torch

from .cpu import cpu_has_fast_bf16, cpu_info, cpu_model

log = logging.getLogger(__name__)

AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")
EMULATED_BF16_SLOWDOWN = "about 16x"  # measured: a swin_unetr_tiny training step on an AVX2-only EPYC, 82 s vs 5 s
# (18x on an AVX-512 EPYC capped to AVX2: 37 s vs 2.1 s)


@functools.cache
def _warn_emulated_bf16(device: str) -> None:
    """One warning per device and process: bf16 was asked for where it is emulated."""
    import torch

    if device == "cpu":
        where = f"{cpu_model()} ({cpu_info().isa_label}) has no native bf16 (no AVX512-BF16 or AMX)"
    else:
        where = f"{torch.cuda.get_device_name(torch.device(device))} has no native bf16"
    log.warning(
        "amp bf16: %s, so bf16 runs emulated, %s slower than fp32; use --amp auto (bf16 only where native) or fp32",
        where,
        EMULATED_BF16_SLOWDOWN,
    )


def resolve_amp(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` for plain float32.

    Args:
        amp: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        device: where the computation runs.

    ``"bf16"`` on hardware without native bf16 is honoured with a warning; ``"fp16"`` on the CPU is a ``ValueError``.
    """
    import torch

    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    device = torch.device(device)
    if amp == "fp32":
        return None
    if amp == "bf16":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_fast_bf16()
        if not native:
            _warn_emulated_bf16(str(device))
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 autocast is only supported on CUDA; use bf16 or fp32 on CPU")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def autocast(amp: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` context for the resolved policy (a no-op context for float32)."""
    import torch

    device = torch.device(device)
    dtype = resolve_amp(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
