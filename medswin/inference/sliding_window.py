"""Fast sliding-window inference of whole volumes, with a memory-bounded streaming mode.

    engine = SlidingWindow(roi_size=(96, 96, 96), overlap=0.5)
    run = ModelRunner(model, amp="auto", roi_size=(96, 96, 96))   # medswin.inference.runner
    logits = engine.logits(run, image)              # (B, K, D, H, W) float32, = MONAI's inferer
    labels = engine.labels(run, image)              # (B, D, H, W) uint8, streamed when large

Like MONAI's ``sliding_window_inference(inputs, roi_size, sw_batch_size, predictor)``, the engine
takes a PREDICTOR callable, windows ``(n, C, *roi)`` -> logits ``(n, K, *roi)``, and knows no model:
size checks, eval mode, precision, mirroring and ``torch.compile`` belong to the callable
(:class:`~medswin.inference.runner.ModelRunner`).  Windows are cut from the input on its device;
the accumulator lives where the callable's outputs come back (or on the CPU, see below).

The windows and weights are MONAI's ``sliding_window_inference`` ones (zero padding up to the roi,
scan interval ``int(roi * (1 - overlap))``, ``dense_patch_slices``, the Gaussian
``compute_importance_map`` with sigma ``0.125 * roi``), so the blended logits equal MONAI's to
float32 rounding.  How the work is done differs:

* the Gaussian importance map is built once per (roi, sigma, device), in float32, and cached;
* windows run ``sw_batch_size`` at a time under ``torch.inference_mode``;
* LOGITS are blended (Gaussian-weighted sum divided by the summed weights), not per-window
  probabilities.  That is what MONAI's inferer and the plain reference
  :func:`~medswin.inference.reference.predict_logits` compute, so results are the reference's; a
  label map is the argmax of the blended logits, which needs neither the division (the summed
  weights are positive per voxel) nor any softmax, and probabilities are one in-place softmax or
  sigmoid at the end (no second full-size tensor);
* window outputs are weighted straight into the accumulator (``addcmul_``: no weighted copy of each
  window), float32 by default, float16 / bfloat16 on request (half the memory; labels can then
  differ where the two best classes are within the accumulator's rounding of each other);
* the accumulator ``(K, X, Y, depth)`` ROLLS along the last axis.  Windows are taken in order of
  their start on that axis; once every window starting before plane ``z`` has been added, the
  planes below ``z`` are final, leave the buffer (as labels or as normalised logits) and the buffer
  moves on.  With ``depth`` = the whole volume this is the direct path (one flush at the end); in
  STREAMING mode ``depth`` is what the memory budget allows (at least the roi), so when labels are
  asked for no full-size ``(K, X, Y, Z)`` float tensor ever exists and the output is ``uint8``
  (``int16`` beyond 255 classes).  Streaming is chosen automatically when the full accumulator
  would exceed ``memory_budget_gb``, or forced with ``streaming=True``;
* with the predictor's outputs on CUDA the rolling buffer lives on the GPU (bounded by the budget and by half the
  free GPU memory) and finished slabs go to the output device (the input's, usually the CPU), so
  the whole-volume result is never on the GPU; ``accumulate_on="cpu"`` keeps the buffer itself on
  the CPU (each batch of windows is weighted on the GPU, then copied), for GPUs too small even for
  one slab.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices
from tqdm import tqdm

log = logging.getLogger(__name__)

ACCUMULATOR_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ACCUMULATE_ON = ("auto", "device", "cpu")
SIGMA_SCALE = 0.125  # MONAI's Gaussian sigma, as a fraction of the roi
GiB = 1024**3

Predictor = Callable[[torch.Tensor], torch.Tensor]  # windows (n, C, *roi) -> logits (n, K, *roi)
Labeler = Callable[[torch.Tensor], torch.Tensor]  # normalised logits (K, x, y, z) -> labels (x, y, z)


# ---------------------------------------------------------------------------------------------
# the windows of a volume (MONAI's layout)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowPlan:
    """The sliding windows of one volume, laid out as MONAI's ``sliding_window_inference`` lays them
    out and ordered by their start on the last axis (stable, so MONAI's order within a plane).

    ``pad`` is the ``F.pad`` argument (last axis first) growing the image to at least the roi,
    ``padded_shape`` the grown shape, ``crop`` the image's region in it, ``starts`` the window
    corners in padded coordinates.
    """

    spatial_shape: tuple[int, ...]
    roi: tuple[int, ...]
    padded_shape: tuple[int, ...]
    pad: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]

    @property
    def crop(self) -> tuple[slice, ...]:
        """The image's region inside the padded grid, one slice per spatial axis."""
        n = len(self.spatial_shape)
        lows = [self.pad[2 * (n - 1 - i)] for i in range(n)]
        return tuple(slice(lo, lo + s) for lo, s in zip(lows, self.spatial_shape))

    @property
    def num_windows(self) -> int:
        """Windows per image."""
        return len(self.starts)

    @property
    def slices(self) -> list[tuple[slice, ...]]:
        """The windows as slices of the padded grid, in MONAI's order (``dense_patch_slices``)."""
        return [tuple(slice(a, a + r) for a, r in zip(start, self.roi)) for start in sorted(self.starts)]

    def pad_image(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` -> ``(B, C, *padded_shape)``, zero-padded as MONAI's sliding windows pad."""
        return F.pad(image, self.pad) if any(self.pad) else image

    def summed_weights(self, device: torch.device | str = "cpu", sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
        """The Gaussian weights of every window summed on the padded grid, ``(1, 1, *padded_shape)`` float32:
        the divisor of the blend, ``blended = sum_w pad(weight * out_w) / summed_weights``."""
        weight = gaussian_importance(self.roi, float(sigma_scale), str(torch.device(device)))
        total = torch.zeros((1, 1, *self.padded_shape), dtype=torch.float32, device=device)
        for sl in self.slices:
            total[(slice(None), slice(None), *sl)] += weight
        return total


def window_plan(spatial_shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> WindowPlan:
    """The windows of a volume of ``spatial_shape`` (see :class:`WindowPlan`)."""
    shape, roi = tuple(int(s) for s in spatial_shape), tuple(int(r) for r in roi_size)
    if len(shape) != len(roi):
        raise ValueError(f"roi_size {roi} has {len(roi)} axes but the volume has {len(shape)} spatial axes {shape}")
    if any(r < 1 for r in roi):
        raise ValueError(f"roi_size must be positive, got {roi}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    pad: list[int] = []
    for k in range(len(shape) - 1, -1, -1):  # F.pad order: last axis first; MONAI splits diff // 2 before
        diff = max(roi[k] - shape[k], 0)
        pad.extend([diff // 2, diff - diff // 2])
    padded = tuple(max(s, r) for s, r in zip(shape, roi))
    scan = tuple(r if r == p else max(1, int(r * (1 - overlap))) for r, p in zip(roi, padded))
    slices = dense_patch_slices(padded, roi, scan, return_slice=True)
    starts = sorted((tuple(int(s.start) for s in sl) for sl in slices), key=lambda s: s[-1])
    return WindowPlan(shape, roi, padded, tuple(pad), tuple(starts))


@functools.lru_cache(maxsize=16)
def gaussian_importance(roi_size: tuple[int, ...], sigma_scale: float, device: str) -> torch.Tensor:
    """MONAI's Gaussian importance map ``(*roi)`` in float32 on ``device``, computed once and cached
    (the same values ``sliding_window_inference(mode="gaussian")`` weights windows with)."""
    w = compute_importance_map(roi_size, "gaussian", sigma_scale, device=torch.device(device), dtype=torch.float32)
    return w.contiguous()


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------


@dataclass
class Slab:
    """Finished planes of one image, as the engine emits them: ``weighted`` is the Gaussian-weighted
    sum of window logits ``(K, x, y, dz)`` over the image's region (padding cropped), ``count`` the
    summed weights ``(1, x, y, dz)`` (``None`` when not asked for), ``index`` the image in the batch,
    ``planes`` the slab's last-axis range in the image.  Both tensors are views into the rolling
    buffer: valid until the next slab is requested."""

    index: int
    planes: slice
    weighted: torch.Tensor
    count: torch.Tensor | None

    def logits(self) -> torch.Tensor:
        """Normalised (blended) logits of the slab, float32 (a new tensor)."""
        if self.count is None:
            raise ValueError("this slab was produced without the summed weights; ask iter_slabs(..., need_count=True)")
        return self.weighted.float() / self.count


@dataclass
class SlidingWindow:
    """Gaussian-blended sliding-window inference over a predictor callable (see the module docstring).

    Args:
        roi_size: window size (3 ints).
        overlap: window overlap in [0, 1) (MONAI's meaning).
        sw_batch_size: windows per predictor call.
        sigma_scale: Gaussian sigma as a fraction of the roi (MONAI's 0.125).
        accumulator_dtype: ``torch.float32`` (default), ``torch.float16`` or ``torch.bfloat16``.
        streaming: ``None`` = stream when the full accumulator exceeds ``memory_budget_gb``;
            ``True`` = always roll within the budget; ``False`` = never.
        memory_budget_gb: bound on the rolling accumulator (and summed weights), in GiB.
        accumulate_on: ``"auto"`` (the predictor's output device when one slab fits there, else the CPU),
            ``"device"`` or ``"cpu"``.
        progress: a tqdm bar over the windows.
    """

    roi_size: Sequence[int]
    overlap: float = 0.5
    sw_batch_size: int = 1
    sigma_scale: float = SIGMA_SCALE
    accumulator_dtype: torch.dtype = torch.float32
    streaming: bool | None = None
    memory_budget_gb: float = 2.0
    accumulate_on: str = "auto"
    progress: bool = False

    def __post_init__(self) -> None:
        self.roi_size = tuple(int(r) for r in self.roi_size)
        if len(self.roi_size) != 3 or any(r < 1 for r in self.roi_size):
            raise ValueError(f"roi_size must be 3 positive sizes, got {self.roi_size}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if int(self.sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        self.sw_batch_size = int(self.sw_batch_size)
        if self.accumulator_dtype not in ACCUMULATOR_DTYPES:
            raise ValueError(f"accumulator_dtype must be one of {ACCUMULATOR_DTYPES}, got {self.accumulator_dtype}")
        if self.accumulate_on not in ACCUMULATE_ON:
            raise ValueError(f"accumulate_on must be one of {ACCUMULATE_ON}, got {self.accumulate_on!r}")
        if not self.memory_budget_gb > 0:
            raise ValueError(f"memory_budget_gb must be > 0, got {self.memory_budget_gb}")

    # ------------------------------------------------------------------ planning
    def plan(self, spatial_shape: Sequence[int]) -> WindowPlan:
        """The windows of a volume of ``spatial_shape``."""
        return window_plan(spatial_shape, self.roi_size, self.overlap)

    def accumulator_bytes(self, spatial_shape: Sequence[int], num_classes: int, need_count: bool = True) -> int:
        """Bytes of the full-volume accumulator (and summed weights) for ``num_classes`` outputs."""
        plan = self.plan(spatial_shape)
        return math.prod(plan.padded_shape) * self._bytes_per_voxel(num_classes, need_count)

    def streams(self, spatial_shape: Sequence[int], num_classes: int, need_count: bool = True) -> bool:
        """Whether a volume of ``spatial_shape`` is processed in rolling slabs (budget exceeded, or forced)."""
        if self.streaming is not None:
            return bool(self.streaming)
        return self.accumulator_bytes(spatial_shape, num_classes, need_count) > self.memory_budget_gb * GiB

    def _bytes_per_voxel(self, num_classes: int, need_count: bool) -> int:
        itemsize = torch.empty((), dtype=self.accumulator_dtype).element_size()
        return num_classes * itemsize + (4 if need_count else 0)

    # ------------------------------------------------------------------ public outputs
    def logits(
        self,
        predictor: Predictor,
        image: torch.Tensor,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Blended logits ``(B, K, D, H, W)`` float32 for ``image`` ``(B, C, D, H, W)`` (MONAI's
        ``sliding_window_inference(mode="gaussian")`` result).

        Args:
            predictor: windows ``(n, C, *roi)`` -> logits ``(n, K, *roi)``.
            image: the volume(s), floating point.
            out_device: where the result goes (default: the input's device).
        """
        image = _checked(image)
        out_device = torch.device(out_device) if out_device is not None else image.device
        padding = any(self.plan(image.shape[2:]).pad)
        out: torch.Tensor | None = None
        for slab in self.iter_slabs(predictor, image, need_count=True):
            assert slab.count is not None
            if (
                out is None
                and image.shape[0] == 1
                and not padding
                and slab.planes == slice(0, image.shape[-1])
                and slab.weighted.dtype == torch.float32
                and slab.weighted.device == out_device
            ):
                out = slab.weighted.div_(slab.count).unsqueeze(0)  # one slab, no crop: the buffer IS the result
                continue
            if out is None:
                shape = (image.shape[0], slab.weighted.shape[0], *image.shape[2:])
                out = torch.empty(shape, dtype=torch.float32, device=out_device)
            view = out[slab.index, ..., slab.planes]
            view.copy_(slab.weighted)
            view.div_(slab.count.to(out_device))
        assert out is not None
        return out

    def probabilities(
        self,
        predictor: Predictor,
        image: torch.Tensor,
        sigmoid: bool = False,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Softmax (or ``sigmoid``) of the blended logits ``(B, K, D, H, W)``, computed in place."""
        out = self.logits(predictor, image, out_device)
        return out.sigmoid_() if sigmoid else softmax_(out, 1)

    def labels(
        self,
        predictor: Predictor,
        image: torch.Tensor,
        labeler: Labeler | None = None,
        out_device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Label map ``(B, D, H, W)`` for ``image`` ``(B, C, D, H, W)``: the argmax of the blended
        logits (``uint8``; ``int16`` beyond 255 classes), or ``labeler(normalised logits (K, x, y, z))``
        per slab (``int16``), e.g. region thresholds.  Streams when the accumulator is over budget."""
        image = _checked(image)
        out_device = torch.device(out_device) if out_device is not None else image.device
        out: torch.Tensor | None = None
        for slab in self.iter_slabs(predictor, image, need_count=labeler is not None):
            lab = slab.weighted.argmax(0) if labeler is None else labeler(slab.logits())
            if out is None:
                dtype = torch.uint8 if labeler is None and slab.weighted.shape[0] <= 255 else torch.int16
                out = torch.empty((image.shape[0], *image.shape[2:]), dtype=dtype, device=out_device)
            out[slab.index, ..., slab.planes] = lab.to(device=out_device, dtype=out.dtype)
        assert out is not None
        return out

    # ------------------------------------------------------------------ the rolling accumulator
    def iter_slabs(self, predictor: Predictor, image: torch.Tensor, need_count: bool = True) -> Iterator[Slab]:
        """Run every window of every image of ``image`` ``(B, C, D, H, W)`` through ``predictor`` and yield
        the finished slabs in order (see :class:`Slab`); the building block of :meth:`logits` and
        :meth:`labels`.  The predictor runs under ``torch.inference_mode``; the yielded tensors are
        ordinary tensors."""
        image = _checked(image)
        plan = self.plan(image.shape[2:])
        log.debug(
            "sliding window: %d windows of %s over %s (padded %s)",
            plan.num_windows,
            plan.roi,
            tuple(image.shape[2:]),
            plan.padded_shape,
        )
        bar = tqdm(total=plan.num_windows * image.shape[0], desc="windows", disable=not self.progress, leave=False)
        try:
            for b in range(image.shape[0]):
                yield from self._image_slabs(b, plan.pad_image(image[b : b + 1]), plan, predictor, need_count, bar)
        finally:
            bar.close()

    def _image_slabs(
        self, b: int, padded: torch.Tensor, plan: WindowPlan, predictor: Predictor, need_count: bool, bar: tqdm
    ) -> Iterator[Slab]:
        rz, zp, n, starts = plan.roi[-1], plan.padded_shape[-1], plan.num_windows, plan.starts
        buf: torch.Tensor | None = None
        count: torch.Tensor | None = None
        device = acc_device = padded.device
        weight = w_acc = torch.empty(0)
        lo, depth, i = 0, rz, 0
        while i < n:
            if buf is not None and starts[i][-1] + rz > lo + depth:  # window i does not fit: planes below it are final
                hi = starts[i][-1]
                yield self._slab(b, buf, count, lo, hi, plan)
                with torch.inference_mode():
                    _shift(buf, hi - lo)
                    if count is not None:
                        _shift(count, hi - lo)
                lo = hi
            j = i + 1
            while j < n and j - i < self.sw_batch_size and starts[j][-1] + rz <= lo + depth:
                j += 1
            group = starts[i:j]
            with torch.inference_mode():
                windows = [padded[(slice(None), slice(None), *_window(s, plan.roi))] for s in group]
                y = predictor(torch.cat(windows) if len(windows) > 1 else windows[0])
                if y.dim() != 5 or y.shape[0] != len(group) or tuple(y.shape[2:]) != plan.roi:
                    raise ValueError(
                        f"the predictor returned shape {tuple(y.shape)} for {len(group)} window(s) of {plan.roi}; "
                        f"expected ({len(group)}, K, {', '.join(map(str, plan.roi))})"
                    )
                if buf is None:  # first output: the class count, layout and device are known now
                    device = y.device
                    weight = gaussian_importance(plan.roi, float(self.sigma_scale), str(device))
                    acc_device, depth = self._place(plan, y, device, need_count)
                    with torch.inference_mode(False):  # ordinary tensors: callers may update them in place
                        buf = _new_buffer(y, (*plan.padded_shape[:-1], depth), self.accumulator_dtype, acc_device)
                        if need_count:
                            count = torch.zeros((1, *plan.padded_shape[:-1], depth), device=acc_device)
                    w_acc = weight.to(acc_device)
                    if depth < zp:
                        log.info(
                            "streaming: %d-plane slabs, accumulator %s on %s (budget %.2f GiB)",
                            depth,
                            tuple(buf.shape),
                            acc_device,
                            self.memory_budget_gb,
                        )
                if acc_device != device:  # weight where the outputs are, then copy the weighted windows over
                    y = (y.float() * weight).to(self.accumulator_dtype).to(acc_device)
                for k, s in enumerate(group):
                    region = (slice(None), *_window(s, plan.roi, offset=lo))
                    if acc_device != device:
                        buf[region].add_(y[k])
                    else:
                        buf[region].addcmul_(y[k], weight)
                    if count is not None:
                        count[region].add_(w_acc)
            bar.update(len(group))
            i = j
        assert buf is not None
        yield self._slab(b, buf, count, lo, zp, plan)

    def _place(
        self,
        plan: WindowPlan,
        y: torch.Tensor,
        device: torch.device,
        need_count: bool,
    ) -> tuple[torch.device, int]:
        """Where the rolling buffer lives and how many planes it holds."""
        rz, zp = plan.roi[-1], plan.padded_shape[-1]
        plane = math.prod(plan.padded_shape[:-1]) * self._bytes_per_voxel(int(y.shape[1]), need_count)
        budget = self.memory_budget_gb * GiB
        acc_device = device
        if device.type == "cuda" and self.accumulate_on != "device":
            free, _ = torch.cuda.mem_get_info(device)
            if self.accumulate_on == "cpu" or plane * rz > 0.5 * free:  # not even one slab fits: stitch on the CPU
                acc_device = torch.device("cpu")
            else:
                budget = min(budget, 0.5 * free)
        elif self.accumulate_on == "cpu":
            acc_device = torch.device("cpu")
        stream = self.streaming if self.streaming is not None else plane * zp > budget
        depth = min(zp, max(rz, int(budget // plane))) if stream else zp
        return acc_device, depth

    def _slab(self, b: int, buf: torch.Tensor, count: torch.Tensor | None, lo: int, hi: int, plan: WindowPlan) -> Slab:
        """The planes ``[lo, hi)`` (padded coordinates) of the buffer, cropped to the image."""
        crop = plan.crop
        z0, z1 = max(lo, crop[-1].start), min(hi, crop[-1].stop)
        local = slice(z0 - lo, z1 - lo)
        region = (*crop[:-1], local)
        return Slab(
            b,
            slice(z0 - crop[-1].start, z1 - crop[-1].start),
            buf[(slice(None), *region)],
            count[(slice(None), *region)] if count is not None else None,
        )


def softmax_(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` in place (``x`` is overwritten and returned): no second full-size tensor."""
    x.sub_(x.amax(dim, keepdim=True)).exp_()
    return x.div_(x.sum(dim, keepdim=True))


def _checked(image: torch.Tensor) -> torch.Tensor:
    """``image`` as a plain tensor (MetaTensor unwrapped), or a ``ValueError`` saying what is wrong with it."""
    as_tensor = getattr(image, "as_tensor", None)  # MONAI MetaTensor
    image = as_tensor() if as_tensor is not None else torch.as_tensor(image)
    if image.dim() != 5:
        raise ValueError(f"image must be (B, C, D, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be a floating-point tensor, got {image.dtype}")
    return image


def _window(start: Sequence[int], roi: Sequence[int], offset: int = 0) -> tuple[slice, ...]:
    """Slices of the window at ``start``; the last axis is shifted by ``-offset`` (the buffer's origin)."""
    sl = [slice(s, s + r) for s, r in zip(start, roi)]
    sl[-1] = slice(start[-1] - offset, start[-1] - offset + roi[-1])
    return tuple(sl)


def _new_buffer(y: torch.Tensor, spatial: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed ``(K, *spatial)`` accumulator in the window output's memory layout (channels-last
    outputs, as medswin's models produce, get a channels-last buffer so the adds run contiguously)."""
    k = int(y.shape[1])
    if y.dim() == 5 and y.stride(1) == 1 and k > 1:
        return torch.zeros((*spatial, k), dtype=dtype, device=device).permute(3, 0, 1, 2)
    return torch.zeros((k, *spatial), dtype=dtype, device=device)


def _shift(buf: torch.Tensor, by: int) -> None:
    """Move the planes ``[by, depth)`` of ``buf`` (last axis) to the front, in place, and zero the rest."""
    depth = buf.shape[-1]
    keep = depth - by
    for start in range(0, keep, by):  # chunks no longer than ``by`` never overlap their source
        n = min(by, keep - start)
        buf[..., start : start + n].copy_(buf[..., by + start : by + start + n])
    buf[..., max(keep, 0) :].zero_()
