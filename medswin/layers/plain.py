"""Plain-ops mode: medswin's fused CPU kernels that are Python ``autograd.Function`` s (the instance
norm + residual + LeakyReLU of :mod:`.norm`, the window gathers of :mod:`.window`) run as the same
computation in plain PyTorch ops, which ``torch.jit.trace`` records and TorchScript serialises.

It is on while ``torch.jit.trace`` runs, and inside ``with plain_ops():`` (export code that wants to
be explicit about it, e.g. MONAI's ``ckpt_export``).  Slower, with autograd's own backward: for
export only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_DEPTH = [0]  # nesting depth of plain_ops() blocks


@contextmanager
def plain_ops() -> Iterator[None]:
    """Within the block, the fused kernels run as plain PyTorch ops (see the module docstring)."""
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1


def use_plain_ops() -> bool:
    """True inside :func:`plain_ops` or while ``torch.jit.trace`` records."""
    return _DEPTH[0] > 0 or torch.jit.is_tracing()
