"""The model as the sliding-window engine calls it: size checks, eval mode, device, precision,
mirroring and ``torch.compile`` in one thin wrapper, so that the engine knows no model.

    run = ModelRunner(model, amp="auto", mirror=True, roi_size=(96, 96, 96))
    logits = SlidingWindow((96, 96, 96)).logits(run, image)
    labels = predict_labels(model, image, roi_size=(96, 96, 96))      # the same, in one call

Mirroring is nnU-Net's: each window is predicted in its 8 flips (no flip, each axis, each pair, all
three), the flipped logits are flipped back and averaged; it is the only mirroring in medswin (the
predictor, trainer validation and the adapters all use this runner).
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..amp import autocast
from ..models import check_roi
from .sliding_window import SlidingWindow

log = logging.getLogger(__name__)

MIRROR_AXES: tuple[tuple[int, ...], ...] = tuple(
    axes for n in range(4) for axes in itertools.combinations((2, 3, 4), n)
)  # (), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4): the 8 mirror images of a window

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {backend: compiled model}


class ModelRunner:
    """``runner(x)``: windows ``(n, C, *roi)`` -> logits ``(n, K, *roi)`` of ``model``, the predictor callable
    of :class:`~medswin.inference.sliding_window.SlidingWindow`.

    Args:
        model: a volume model ``(B, C, D, H, W) -> (B, K, D, H, W)`` (deep-supervision dicts and tuples
            give their main output).  Put in eval mode; gradients flow when the caller enables them
            (the test-time adapters do), the engine runs it under ``torch.inference_mode``.
        amp: precision policy of :mod:`medswin.amp` (``"auto"``, ``"bf16"``, ``"fp16"``, ``"fp32"``).
        mirror: average the logits of the 8 flips of each window.
        channels_last: feed windows in ``channels_last_3d`` memory format.
        compile: run the model through ``torch.compile`` (compiled once per model object and backend):
            ``True`` = inductor, a string = that backend (e.g. ``"aot_eager"``).
        roi_size: checked against the model's size rule up front (``None``: checked by the model's forward).

    Windows are moved to the model's device; the logits come back there.
    """

    def __init__(
        self,
        model: nn.Module,
        amp: str = "auto",
        mirror: bool = False,
        channels_last: bool = False,
        compile: bool | str = False,
        roi_size: Sequence[int] | None = None,
    ) -> None:
        if roi_size is not None:
            check_roi(model, roi_size)
        self.model = model.eval()
        self.amp, self.mirror, self.channels_last = amp, bool(mirror), bool(channels_last)
        self.device = model_device(model)
        self.in_channels = getattr(model, "in_channels", None)
        autocast(amp, self.device)  # validates the policy for this device now, not at the first window
        self.net = self._compiled(model, compile) if compile else model

    @staticmethod
    def _compiled(model: nn.Module, compile: bool | str) -> nn.Module:
        backend = compile if isinstance(compile, str) else "inductor"
        cache = _COMPILED.setdefault(model, {})
        if backend not in cache:
            log.info("compiling %s with torch.compile(backend=%r)", type(model).__name__, backend)
            cache[backend] = torch.compile(model, backend=backend)
        return cache[backend]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(self.amp, self.device):
            y = self.net(x)
        if isinstance(y, dict):  # deep-supervision models outside eval mode
            y = y["out"]
        elif isinstance(y, (tuple, list)):
            y = y[0]
        return y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, K, *roi)`` of the windows ``x`` ``(n, C, *roi)`` (float32 when mirrored)."""
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(f"the model takes {self.in_channels} channel(s), the image has {x.shape[1]}")
        x = x.to(self.device, non_blocking=True)
        if not self.mirror:
            return self._forward(x)
        total = None
        for axes in MIRROR_AXES:
            y = self._forward(torch.flip(x, axes) if axes else x).float()
            y = torch.flip(y, axes) if axes else y
            total = y if total is None else total.add_(y)
        assert total is not None
        return total.div_(len(MIRROR_AXES))


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer (an ONNX Runtime model has no
    parameters), else the CPU."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def predict_labels(model: nn.Module, image: torch.Tensor, roi_size: Sequence[int], **kwargs: Any) -> torch.Tensor:
    """Label map ``(B, D, H, W)`` (``uint8``: the argmax of the blended logits) of ``image`` ``(B, C, D, H, W)``.

    Args:
        model: a volume model.
        image: the volume(s), floating point.
        roi_size: window size.
        **kwargs: :class:`ModelRunner` options (``amp``, ``mirror``, ``channels_last``, ``compile``) and
            :class:`~medswin.inference.sliding_window.SlidingWindow` options (``overlap``,
            ``sw_batch_size``, ``streaming``, ``memory_budget_gb``, ...).

    The same windows and blending as :func:`~medswin.inference.reference.predict_logits` (the plain
    MONAI reference), without full-size probabilities; streamed in slabs when the accumulator would
    exceed the memory budget.
    """
    runner_keys = ("amp", "mirror", "channels_last", "compile")
    runner = ModelRunner(model, roi_size=roi_size, **{k: kwargs.pop(k) for k in runner_keys if k in kwargs})
    return SlidingWindow(roi_size, **kwargs).labels(runner, image)


def auto_sw_batch_size(model: nn.Module, roi_size: Sequence[int], device: torch.device, in_channels: int = 1) -> int:
    """Windows per forward pass that fit in half the free memory (1-8), measured with one window on CUDA.

    On CPU a larger batch barely speeds up (the cores are busy either way) and raises the memory
    peak, so at most 2 are used there (2 only with at least 8 GB available).
    """
    if device.type != "cuda":
        return 1 if cpu_available_bytes() < 8e9 else 2
    free, _ = torch.cuda.mem_get_info(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), autocast("auto", device):
        model(torch.zeros(1, in_channels, *roi_size, device=device))
    per_window = max(1, torch.cuda.max_memory_allocated(device) - before)
    return int(max(1, min(8, (0.5 * free) // per_window)))


def cpu_available_bytes() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (4 GB where it cannot be read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 4e9
