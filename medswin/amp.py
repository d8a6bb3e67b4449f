"""Mixed-precision policy shared by inference, training, pretraining and adaptation.

``amp="auto"`` means: bf16 autocast where the hardware computes bf16 natively (CUDA with bf16
support; CPUs with AVX512-BF16 or AMX, where oneDNN runs bf16 convolutions and matmuls several
times faster than fp32), float32 elsewhere.  MONAI bundles switch AMP off on CPU; turning it on
where it pays is a deliberate, user-visible default, and ``amp="fp32"`` restores exact float32.
"""

from __future__ import annotations

import contextlib

import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")


def cpu_has_fast_bf16() -> bool:
    """True when this CPU runs bf16 matrix work natively (AVX512-BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def resolve_amp(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` for plain float32."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    device = torch.device(device)
    if amp == "fp32":
        return None
    if amp == "bf16":
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
    device = torch.device(device)
    dtype = resolve_amp(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
