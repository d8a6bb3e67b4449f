"""Where things run: a device string checked once, with one clear line for what cannot work.

resolve_device(None)        # CUDA when available, else the CPU
resolve_device("cuda:1")    # ValueError when this PyTorch has no CUDA or no second GPU
"""

from __future__ import annotations

import torch

DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """The ``torch.device`` for a user's device choice.

    Args:
        device: ``None`` / ``"auto"`` (this process's CUDA device when available, else the CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.
        local_rank: the GPU ``"auto"`` and ``"cuda"`` pick under torchrun.

    Raises ``ValueError`` (one line) for an unknown device string, CUDA on a PyTorch build or machine
    without it, and a GPU index beyond the visible ones.
    """
    if device is None or device == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"device {str(device)!r} is not supported by medswin: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(
                f"device {str(device)!r} asked for, but {build} (torch {torch.__version__}); use --device cpu"
            )
        index = local_rank if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        dev = torch.device("cuda", index)
    return dev
