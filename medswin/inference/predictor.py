"""Whole-volume prediction: MONAI sliding-window inference, mirroring, inversion to the input grid.

    predictor = Predictor.from_checkpoint("runs/mni/checkpoint_best.pt", mirror=True)
    predictor.predict_file("case.nii.gz", "case_seg.nii.gz")

A prediction goes: load (nibabel / SimpleITK / DICOM series) -> the dataset's inference transforms
(RAS, spacing, normalisation) -> Gaussian-blended sliding windows of ``roi_size`` (optionally
averaged over the 8 mirror images, nnU-Net style: probabilities of each flipped input, flipped back,
averaged) -> softmax (labels) or sigmoid (regions) -> ``Invertd`` back onto the input's grid ->
argmax or region thresholds -> background outside the scan for nonzero-normalised data (voxels
that are 0 in every channel, e.g. outside a skull-stripped brain) -> optional largest connected
component -> NIfTI with the input's
affine, or DICOM-SEG referencing the input series.  Sizes and channels are checked up front.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from torch import nn
from tqdm import tqdm

from ..amp import autocast
from ..data.errors import DataError
from ..data.spec import DatasetSpec
from .sliding_window import SlidingWindow

if TYPE_CHECKING:
    from ..adaptation import EntropyAdapter

log = logging.getLogger(__name__)

VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def check_roi(model: nn.Module, roi_size: Sequence[int]) -> None:
    """Raise ``ValueError`` when ``roi_size`` does not suit ``model`` (divisibility, minimum size)."""
    check = getattr(model, "check_input_size", None)
    if check is not None:
        try:
            check(tuple(roi_size))
        except ValueError as exc:
            raise ValueError(f"roi_size {tuple(roi_size)} does not fit {type(model).__name__}: {exc}") from None
        return
    k = getattr(model, "size_divisor", 1)
    if any(int(r) % k for r in roi_size):
        raise ValueError(f"roi_size {tuple(roi_size)} must be a multiple of {k} for {type(model).__name__}")


def auto_sw_batch_size(model: nn.Module, roi_size: Sequence[int], device: torch.device, in_channels: int = 1) -> int:
    """Windows per forward pass that fit in half the free memory (1-8), measured with one window on CUDA.

    On CPU a larger batch barely speeds up (the cores are busy either way) and raises the memory
    peak, so at most 2 are used there.
    """
    if device.type != "cuda":
        return 1 if _cpu_available_bytes() < 8e9 else 2
    free, _ = torch.cuda.mem_get_info(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), autocast("auto", device):
        model(torch.zeros(1, in_channels, *roi_size, device=device))
    per_window = max(1, torch.cuda.max_memory_allocated(device) - before)
    return int(max(1, min(8, (0.5 * free) // per_window)))


def _cpu_available_bytes() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 4e9


def predict_logits(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    amp: str = "auto",
) -> torch.Tensor:
    """Logits ``(B, out, *S)`` (float32) for ``image`` ``(B, in, *S)`` by Gaussian-blended sliding windows."""
    check_roi(model, roi_size)
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode(), autocast(amp, device):
        logits = sliding_window_inference(
            image,
            tuple(roi_size),
            sw_batch_size,
            model,
            overlap=overlap,
            mode="gaussian",
            sw_device=device,
            device=image.device,
        )
    return torch.as_tensor(logits).float()


def predict_labels(model: nn.Module, image: torch.Tensor, roi_size: Sequence[int], **kwargs: Any) -> torch.Tensor:
    """Label map ``(B, *S)`` (``uint8``, the argmax of the blended logits) by the fast sliding-window
    engine: the same windows and blending as :func:`predict_logits` (the plain MONAI reference), no
    full-size probabilities, streamed in slabs when the accumulator would exceed the memory budget.
    Keyword arguments: ``overlap``, ``sw_batch_size``, ``amp`` and any other
    :class:`~medswin.inference.sliding_window.SlidingWindow` option."""
    return SlidingWindow(roi_size, **kwargs).labels(model, image)


MIRROR_AXES: tuple[tuple[int, ...], ...] = tuple(
    axes for n in range(4) for axes in itertools.combinations((2, 3, 4), n)
)  # (), (2,), (3,), (4,), (2, 3), ... : the 8 mirror images of a volume


@dataclass
class Prediction:
    """A prediction on the input's grid: ``labels`` ``(X, Y, Z)``, ``affine`` (RAS), the source path."""

    labels: np.ndarray
    affine: np.ndarray
    source: str


class Predictor:
    """Predict label maps for whole volumes with a trained model (see the module docstring).

    Args:
        model: a registered medswin model (``(B, in, *S) -> (B, out, *S)``).
        spec: the dataset spec the model was trained for (transforms, labels or regions).
        roi_size: sliding-window size (default: the spec's), checked against the model.
        overlap: window overlap (0.5).
        sw_batch_size: windows per forward pass, or ``"auto"`` (from free memory).
        amp: ``"auto"`` (bf16 where native), ``"bf16"``, ``"fp16"`` (CUDA), ``"fp32"``.
        mirror: average the probabilities of the 8 mirror images (8x the cost).
        largest_component: keep the largest connected component of each class.
        device: where the model runs (default: CUDA when available).
        adapter: a test-time adapter wrapping this same ``model`` (:mod:`medswin.adaptation`): each
            volume is adapted to before it is predicted, so the prediction (mirrored or not) uses the
            adapted parameters; see :meth:`attach_adapter`.
        streaming: ``None`` (default) = the memory-bounded path when the volume's full accumulator
            would exceed ``memory_budget_gb``; ``True`` / ``False`` force it on / off.  The bounded
            path streams label slabs off a rolling accumulator (no full-size probabilities) and
            inverts the label map with nearest-neighbour interpolation (the direct path interpolates
            probabilities; both agree where the model grid is the input grid); with ``mirror`` it
            mirrors each window (nnU-Net's way) instead of the whole volume.
        memory_budget_gb: bound on the sliding-window accumulator, GiB (2).
        compile: run the model through ``torch.compile`` (``True``, or a backend name).

    Windows run through :class:`~medswin.inference.sliding_window.SlidingWindow`: MONAI's windows
    and Gaussian blending (same results as :func:`predict_logits`), faster and leaner.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: DatasetSpec,
        roi_size: Sequence[int] | None = None,
        overlap: float = 0.5,
        sw_batch_size: int | str = 1,
        amp: str = "auto",
        mirror: bool = False,
        largest_component: bool = False,
        device: str | torch.device | None = None,
        adapter: EntropyAdapter | None = None,
        streaming: bool | None = None,
        memory_budget_gb: float = 2.0,
        compile: bool | str = False,
    ) -> None:
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.adapter: EntropyAdapter | None = None
        self.spec = spec
        self.roi = tuple(int(r) for r in (roi_size or spec.roi_size))
        check_roi(model, self.roi)
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.overlap, self.amp, self.mirror, self.largest_component = overlap, amp, mirror, largest_component
        in_channels = getattr(model, "in_channels", spec.num_channels)
        if in_channels != spec.num_channels:
            raise ValueError(f"the model takes {in_channels} channel(s), dataset {spec.name!r} has {spec.num_channels}")
        out_channels = getattr(model, "out_channels", spec.out_channels)
        if out_channels != spec.out_channels:
            raise ValueError(
                f"the model predicts {out_channels} channel(s), dataset {spec.name!r} needs {spec.out_channels}"
            )
        self.sw_batch_size = (
            auto_sw_batch_size(self.model, self.roi, self.device, spec.num_channels)
            if sw_batch_size == "auto"
            else int(sw_batch_size)
        )
        self.streaming, self.memory_budget_gb, self.compile = streaming, float(memory_budget_gb), compile
        self.engine()  # validates the options
        if adapter is not None:
            self.attach_adapter(adapter)

    def engine(self, **overrides: Any) -> SlidingWindow:
        """The sliding-window engine for this predictor's current settings (``overrides`` replace them)."""
        options: dict[str, Any] = dict(
            roi_size=self.roi,
            overlap=self.overlap,
            sw_batch_size=self.sw_batch_size,
            amp=self.amp,
            compile=self.compile,
            streaming=self.streaming,
            memory_budget_gb=self.memory_budget_gb,
        )
        options.update(overrides)
        return SlidingWindow(**options)

    def attach_adapter(self, adapter: EntropyAdapter) -> None:
        """Adapt to every volume before predicting it.  The adapter must wrap this predictor's model
        object; its unset roi / overlap / amp / sigmoid settings become the predictor's."""
        if adapter.model is not self.model:
            raise ValueError(
                f"the {type(adapter).__name__} adapter wraps a different model object than the predictor's "
                f"{type(self.model).__name__}: build it on predictor.model"
            )
        adapter.bind(self.roi, self.overlap, self.amp, bool(self.spec.regions))
        self.adapter = adapter

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **options: Any) -> Predictor:
        """A predictor for a medswin training checkpoint (model, weights, spec and roi inside)."""
        from ..models import create_model
        from ..training.checkpoint import load_checkpoint, spec_from_dict

        ckpt = load_checkpoint(path)
        spec = spec_from_dict(ckpt["spec"])
        model = create_model(
            ckpt["model_name"],
            in_channels=ckpt["in_channels"],
            out_channels=ckpt["out_channels"],
            **ckpt.get("model_kwargs", {}),
        )
        model.load_state_dict(ckpt["model"])
        options.setdefault("roi_size", ckpt.get("roi_size"))
        return cls(model, spec, **options)

    # ------------------------------------------------------------------ prediction
    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Class (softmax) or region (sigmoid) probabilities ``(1, K, *S)`` for ``image`` ``(1, C, *S)``."""
        self._adapt(image)
        engine = self.engine(streaming=False)
        axes_list = MIRROR_AXES if self.mirror else ((),)
        total = None
        for axes in axes_list:
            x = torch.flip(image, axes) if axes else image
            p = engine.probabilities(self.model, x, sigmoid=bool(self.spec.regions))
            p = torch.flip(p, axes) if axes else p
            total = p if total is None else total.add_(p)
        return total.div_(len(axes_list)) if len(axes_list) > 1 else total

    def _adapt(self, image: torch.Tensor) -> None:
        if self.adapter is not None:  # episodic adapters reset themselves first
            inside = (image != 0).any(1, keepdim=True) if uses_nonzero_mask(self.spec) else None
            self.adapter.adapt(image, inside if inside is not None and bool(inside.any()) else None)

    def streamed_labels(self, image: torch.Tensor) -> torch.Tensor:
        """The memory-bounded path: label map ``(1, *S)`` (the dataset's label values, ``uint8`` /
        ``int16``) for ``image`` ``(1, C, *S)`` on the model's grid, streamed in slabs off a rolling
        accumulator whatever the budget says; background outside the scan for nonzero-normalised data."""
        self._adapt(image)
        engine = self.engine(streaming=True, mirror=self.mirror, progress=True)  # large volumes: minutes of windows
        values = sorted(self.spec.labels.values())

        def to_labels(logits: torch.Tensor) -> torch.Tensor:  # one slab: region thresholds or label values
            return _to_labels(logits.sigmoid_() if self.spec.regions else logits, self.spec, False)

        plain_argmax = not self.spec.regions and values == list(range(len(values)))  # class index = label value
        labels = engine.labels(self.model, image, labeler=None if plain_argmax else to_labels)
        if uses_nonzero_mask(self.spec):
            labels[~(image != 0).any(1)] = 0
        return labels

    def predict(
        self, image_path: str | os.PathLike | Sequence[str | os.PathLike], series_uid: str | None = None
    ) -> Prediction:
        """Predict one case (a file, a DICOM folder, or one file per channel) on its own grid."""
        from ..data.io import SimpleITKReader
        from ..data.transforms import infer_transforms, invert_transforms

        paths = [Path(p) for p in ([image_path] if isinstance(image_path, (str, os.PathLike)) else image_path)]
        for p in paths:
            if not p.exists():
                raise DataError(p, "file not found")
        use_sitk = any(p.is_dir() or not p.name.lower().endswith((".nii", ".nii.gz")) for p in paths)
        pipeline = infer_transforms(self.spec, SimpleITKReader(series_uid) if use_sitk else None)
        source = str(paths[0]) if len(paths) == 1 else str(paths[0].parent)
        try:
            data = pipeline({"image": [str(p) for p in paths] if len(paths) > 1 else str(paths[0])})
        except DataError:
            raise
        except Exception as exc:  # MONAI wraps reader errors in RuntimeError chains
            cause = exc
            while cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, DataError):
                raise cause from None
            raise DataError(source, f"cannot load or transform the input ({type(cause).__name__}: {cause})") from None
        image = data["image"]
        if image.shape[0] != self.spec.num_channels:
            raise DataError(
                source,
                f"has {image.shape[0]} channel(s), the model expects {self.spec.num_channels} "
                f"({', '.join(self.spec.channel_names)})",
            )
        if not torch.isfinite(image).all():
            raise DataError(source, "image contains NaN/inf voxels")
        if self.engine().streams(image.shape[1:], self.spec.out_channels):
            return self._predict_streamed(data, image, pipeline, source)
        probs = self.probabilities(image.as_tensor()[None])[0]
        outside = uses_nonzero_mask(self.spec)
        if outside:  # carry the scan's nonzero mask through the inversion as one more channel
            probs = torch.cat([probs, (image.as_tensor() != 0).any(0, keepdim=True).float()])
        data["pred"] = MetaTensor(probs, meta=image.meta, applied_operations=image.applied_operations)
        inverted_meta = invert_transforms(pipeline, "pred", nearest=False)(data)["pred"]
        inverted, affine = inverted_meta.as_tensor(), np.asarray(inverted_meta.affine, dtype=np.float64)
        if outside:
            inside, inverted = inverted[-1] > 0.5, inverted[:-1]
        labels = _to_labels(inverted, self.spec, self.largest_component)
        if outside:
            labels[~inside] = 0
        return Prediction(labels.cpu().numpy().astype(np.int16), affine, source)

    def _predict_streamed(self, data: dict, image: MetaTensor, pipeline: Any, source: str) -> Prediction:
        """:meth:`predict` for volumes over the memory budget: streamed labels, inverted (nearest) to the input grid."""
        from ..data.transforms import invert_transforms
        from .postprocess import keep_largest_component

        log.info(
            "%s: %s voxels over the %.1f GiB accumulator budget: streaming labels",
            source,
            tuple(image.shape[1:]),
            self.memory_budget_gb,
        )
        labels = self.streamed_labels(image.as_tensor()[None])
        data["pred"] = MetaTensor(labels, meta=image.meta, applied_operations=image.applied_operations)
        inverted_meta = invert_transforms(pipeline, "pred", nearest=True)(data)["pred"]
        labels, affine = inverted_meta.as_tensor()[0], np.asarray(inverted_meta.affine, dtype=np.float64)
        labels = labels.round().to(torch.int16) if labels.is_floating_point() else labels.to(torch.int16)
        if self.largest_component:
            labels = keep_largest_component(labels)
        return Prediction(labels.cpu().numpy(), affine, source)

    def predict_file(
        self,
        image_path: str | os.PathLike | Sequence[str | os.PathLike],
        out_path: str | os.PathLike,
        fmt: str = "nifti",
        series_uid: str | None = None,
    ) -> Path:
        """Predict and write ``out_path`` (NIfTI with the input's affine, or DICOM-SEG for DICOM input)."""
        from ..data.io import write_nifti

        pred = self.predict(image_path, series_uid)
        if fmt == "nifti":
            return write_nifti(pred.labels, pred.affine, out_path)
        if fmt == "dicom-seg":
            from .dicom_seg import write_dicom_seg

            if not Path(pred.source).is_dir():
                raise ValueError(f"{pred.source}: --format dicom-seg needs a DICOM series folder as input")
            names = {v: k for k, v in self.spec.labels.items() if v != 0}
            if not np.any(pred.labels):
                raise ValueError(f"{pred.source}: the prediction is empty; a DICOM-SEG needs at least one segment")
            return write_dicom_seg(pred.labels, pred.source, out_path, names, series_uid=series_uid)
        raise ValueError(f"unknown output format {fmt!r}; use nifti or dicom-seg")

    def predict_cases(
        self,
        cases: Sequence[tuple[str, list[Path]]],
        out_dir: str | os.PathLike,
        fmt: str = "nifti",
        rank: int = 0,
        world_size: int = 1,
    ) -> list[Path]:
        """Predict many cases into ``out_dir`` (``{case}.nii.gz`` / ``{case}.dcm``); rank r takes cases r, r+N, ..."""
        out_dir = Path(out_dir)
        written = []
        mine = list(cases)[rank::world_size]
        for case, paths in tqdm(mine, desc="predicting", disable=rank != 0 or len(mine) < 2):
            ending = ".dcm" if fmt == "dicom-seg" else ".nii.gz"
            written.append(self.predict_file(paths if len(paths) > 1 else paths[0], out_dir / f"{case}{ending}", fmt))
            log.info("%s -> %s", case, written[-1])
        return written


def uses_nonzero_mask(spec: DatasetSpec) -> bool:
    """True for specs normalised with nonzero z-score: exact zeros in every channel are outside the scan
    (skull-stripped MRI, BraTS) and are predicted background there, as nnU-Net does."""
    return spec.normalization["type"] == "zscore" and bool(spec.normalization.get("nonzero"))


def _to_labels(probs: torch.Tensor, spec: DatasetSpec, largest_component: bool) -> torch.Tensor:
    from .postprocess import keep_largest_component, probabilities_to_labels

    if spec.regions:
        labels = probabilities_to_labels(probs, spec.regions)
    else:
        labels = probabilities_to_labels(probs)
        inverse = torch.tensor(sorted(spec.labels.values()), device=labels.device)  # class index -> label value
        labels = inverse[labels]
    return keep_largest_component(labels) if largest_component else labels


def resolve_inputs(path: str | os.PathLike, spec: DatasetSpec | None = None) -> list[tuple[str, list[Path]]]:
    """Cases of an input path: one file, a DICOM series folder, a datalist JSON, a folder of volumes
    (nnU-Net ``_0000`` channel files grouped), or a dataset folder (its test section when present,
    else its training cases)."""
    from ..data.datalist import build_datalist, detect_layout
    from ..data.io import list_dicom_series

    path = Path(path)
    if not path.exists():
        raise DataError(path, "input not found")
    if path.is_file() and path.suffix == ".json":
        return _datalist_inputs(path)
    if path.is_file():
        return [(_case_name(path.name), [path])]
    try:
        if list_dicom_series(path):
            return [(path.name, [path])]
    except DataError:
        pass
    try:
        detect_layout(path)
        sections = build_datalist(path, spec)
        items = sections.get("test") or sections.get("training", [])
        return [(it["case"], list(it["image"])) for it in items]
    except DataError:
        pass
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(VOLUME_ENDINGS))
    if not files:
        raise DataError(path, "no volumes here (expected NIfTI/NRRD/MHA files, DICOM files or a dataset layout)")
    groups: dict[str, list[Path]] = {}
    for f in files:
        m = re.match(r"(.+)_(\d{4})$", _case_name(f.name))
        groups.setdefault(m.group(1) if m else _case_name(f.name), []).append(f)
    return sorted(groups.items())


def _datalist_inputs(path: Path) -> list[tuple[str, list[Path]]]:
    """Cases of a datalist JSON: a list of ``{"image": ...}`` / paths, or a Decathlon-style dict
    (its ``test`` section when present, else ``training``, else ``validation``)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read the datalist ({exc})") from None
    if isinstance(data, dict):
        data = data.get("test") or data.get("training") or data.get("validation") or []
    cases = []
    for entry in data:
        images = entry.get("image") if isinstance(entry, dict) else entry
        images = images if isinstance(images, list) else [images]
        resolved = [p if Path(p).is_absolute() else (path.parent / p).resolve() for p in map(str, images)]
        paths = [Path(p) for p in resolved]
        cases.append((_case_name(paths[0].name), paths))
    if not cases:
        raise DataError(path, "the datalist has no entries")
    return cases


def _case_name(name: str) -> str:
    for ending in VOLUME_ENDINGS + (".dcm",):
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


class BiplanarPredictor:
    """3D labels from two X-ray views with a biplanar model (Swin-X2S).

    Views are read with :func:`medswin.data.drr.load_view` (2D NIfTI as written by the DRR tools,
    or PNG/JPEG pictures with the superior side up) and min-max scaled to [0, 1]; the label volume
    ``(H, H, W)`` is written with the view-aligned grid's affine when the DRR geometry is found next
    to the coronal view (``meta/{case}_drr.json`` or ``drr.json``), else with ``spacing`` mm voxels.
    """

    def __init__(
        self, model: nn.Module, spec: DatasetSpec, amp: str = "auto", device: str | torch.device | None = None
    ) -> None:
        if not getattr(model, "biplanar", False):
            raise ValueError(f"{type(model).__name__} does not take two X-ray views")
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.spec, self.amp = model.to(self.device).eval(), spec, amp

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **options: Any) -> BiplanarPredictor:
        """A predictor for a Swin-X2S training checkpoint."""
        from ..models import create_model
        from ..training.checkpoint import load_checkpoint, spec_from_dict

        ckpt = load_checkpoint(path)
        model = create_model(
            ckpt["model_name"],
            in_channels=ckpt["in_channels"],
            out_channels=ckpt["out_channels"],
            **ckpt.get("model_kwargs", {}),
        )
        model.load_state_dict(ckpt["model"])
        return cls(model, spec_from_dict(ckpt["spec"]), **options)

    def predict(self, coronal: str | os.PathLike, sagittal: str | os.PathLike) -> np.ndarray:
        """Label volume ``(H, H, W)`` (the dataset's label values) for the two views."""
        from ..data.drr import load_view

        views = []
        for name, path in (("coronal", coronal), ("sagittal", sagittal)):
            view = load_view(path)
            try:
                self.model.check_input_size(view.shape)
            except ValueError as exc:
                raise DataError(path, f"{name} view: {exc}") from None
            views.append(torch.from_numpy(view)[None, None].to(self.device))
        with torch.inference_mode(), autocast(self.amp, self.device):
            logits = self.model(*views).float()[0]
        labels = _to_labels(torch.softmax(logits, 0), self.spec, largest_component=False)
        return labels.cpu().numpy().astype(np.int16)

    def predict_file(
        self, coronal: str | os.PathLike, sagittal: str | os.PathLike, out_path: str | os.PathLike, spacing: float = 1.0
    ) -> Path:
        """Predict and write the label volume as NIfTI (affine from the DRR geometry when known)."""
        from ..data.biplanar import label_affine_for
        from ..data.io import write_nifti

        labels = self.predict(coronal, sagittal)
        affine = label_affine_for(coronal)
        if affine is None:
            affine = np.diag([spacing, spacing, spacing, 1.0])
            log.info("no DRR geometry next to %s: writing %g mm voxels at the origin", coronal, spacing)
        return write_nifti(labels, affine, out_path)
