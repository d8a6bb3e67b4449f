"""Whole-volume prediction with a volume model: checked loading, sliding windows, inversion to the input grid.

    predictor = Predictor.from_checkpoint("runs/mni/checkpoint_best.pt", mirror=True)
    predictor.predict_file("case.nii.gz", "case_seg.nii.gz")

A prediction goes: the data layer's checked reading (NIfTI / NRRD / MHA / DICOM series, through
:class:`~medswin.data.loading.LoadVolumed`) -> the dataset's inference transforms (RAS, spacing,
normalisation) -> optional test-time adaptation -> Gaussian-blended sliding windows of ``roi_size``
(:class:`~medswin.inference.sliding_window.SlidingWindow` over a
:class:`~medswin.inference.runner.ModelRunner`, optionally mirrored per window, nnU-Net style) ->
softmax (labels) or sigmoid (regions) -> ``Invertd`` back onto the input's grid -> argmax or region
thresholds -> background outside the scan for nonzero-normalised data (voxels that are 0 in every
channel, e.g. outside a skull-stripped brain) -> optional largest connected component -> an output
format of :data:`~medswin.inference.writers.OUTPUT_FORMATS`.  Volumes whose accumulator would
exceed the memory budget are streamed as label slabs.  Two X-ray views go through
:class:`~medswin.inference.biplanar.BiplanarPredictor` instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn
from tqdm import tqdm

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data.correction import InputCorrection
from ..data.errors import DataError
from ..data.loading import run_pipeline
from ..data.outputs import check_outputs
from ..data.spec import DatasetSpec
from ..device import resolve_device
from ..models import check_roi, model_kind
from .postprocess import keep_largest_component, to_label_values
from .runner import ModelRunner, auto_sw_batch_size
from .sliding_window import SlidingWindow
from .writers import output_format, output_path

log = logging.getLogger(__name__)


class Adapter(Protocol):
    """What the predictor needs of a test-time adapter (:class:`medswin.adaptation.EntropyAdapter`)."""

    model: nn.Module

    def bind(self, roi_size: Sequence[int], overlap: float, amp: str, sigmoid: bool) -> None:
        """Take the predictor's unset window / precision / output settings."""

    def adapt(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        """Update the model's parameters for ``image`` ``(1, C, D, H, W)`` (``mask`` ``(1, 1, D, H, W)``)."""


@dataclass
class Prediction:
    """A prediction on the input's grid: ``labels`` ``(X, Y, Z)``, ``affine`` (RAS), the source path."""

    labels: np.ndarray
    affine: np.ndarray
    source: str


class Predictor:
    """Predict label maps for whole volumes with a trained volume model (see the module docstring).

    Args:
        model: a volume model (``(B, in, *S) -> (B, out, *S)``).
        spec: the dataset spec the model was trained for (transforms, labels or regions).
        roi_size: sliding-window size (default: the spec's, else the model's registry default), checked
            against the model.
        overlap: window overlap (0.5).
        sw_batch_size: windows per forward pass, or ``"auto"`` (from free memory).
        amp: ``"auto"`` (bf16 where native), ``"bf16"``, ``"fp16"`` (CUDA), ``"fp32"``.
        mirror: average the logits of the 8 mirror images of every window (8x the cost).
        largest_component: keep the largest connected component of each class.
        device: where the model runs: ``None``/``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:N"``.
        adapter: a test-time adapter wrapping this same ``model`` (:mod:`medswin.adaptation`): each
            volume is adapted to before it is predicted, so the prediction uses the adapted parameters.
        streaming: ``None`` (default) = the memory-bounded path when the volume's full accumulator
            would exceed ``memory_budget_gb``; ``True`` / ``False`` force it on / off.  The bounded
            path streams label slabs off a rolling accumulator (no full-size probabilities) and
            inverts the label map with nearest-neighbour interpolation (the direct path interpolates
            probabilities; both agree where the model grid is the input grid).
        memory_budget_gb: bound on the sliding-window accumulator, GiB (2).
        compile: run the model through ``torch.compile`` (``True``, or a backend name).
        correction: an input-side intensity correction run on each volume before its normalisation
            (:class:`medswin.data.correction.InputCorrection`: N4 bias-field correction or histogram matching).
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
        adapter: Adapter | None = None,
        streaming: bool | None = None,
        memory_budget_gb: float = 2.0,
        compile: bool | str = False,
        correction: InputCorrection | None = None,
    ) -> None:
        if model_kind(model) != "volume":
            raise ValueError(f"{type(model).__name__} takes two X-ray views: use BiplanarPredictor")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.adapter: Adapter | None = None
        self.spec = spec
        roi = roi_size or spec.roi_size
        if roi is None:
            raise ValueError(f"dataset {spec.name!r} sets no roi_size: give the sliding-window size (roi_size / --roi)")
        self.roi = tuple(int(r) for r in roi)
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
        if correction is not None and spec.is_ct and correction.method.startswith("n4"):
            raise ValueError(f"dataset {spec.name!r} is CT (HU, no bias field): N4 correction is for MRI")
        self.correction = correction
        self.engine()  # validates the engine options
        self.runner()  # ... and the precision policy on this device
        if adapter is not None:
            self.attach_adapter(adapter)

    def engine(self, **overrides: Any) -> SlidingWindow:
        """The sliding-window engine for this predictor's current settings (``overrides`` replace them)."""
        options: dict[str, Any] = dict(
            roi_size=self.roi,
            overlap=self.overlap,
            sw_batch_size=self.sw_batch_size,
            streaming=self.streaming,
            memory_budget_gb=self.memory_budget_gb,
        )
        options.update(overrides)
        return SlidingWindow(**options)

    def runner(self) -> ModelRunner:
        """The model as the engine calls it: this predictor's precision, mirroring and compile settings."""
        return ModelRunner(self.model, amp=self.amp, mirror=self.mirror, compile=self.compile)

    def attach_adapter(self, adapter: Adapter) -> None:
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
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike | dict[str, Any], source: str | os.PathLike | None = None, **options: Any
    ) -> Predictor:
        """A predictor for a medswin training checkpoint: a path, or a checkpoint already loaded with
        :func:`medswin.checkpoint.load_checkpoint` (model, weights, spec and roi inside; ``source`` names
        its file in error messages)."""
        source = source or ("<checkpoint>" if isinstance(checkpoint, dict) else checkpoint)
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        model, spec = model_from_checkpoint(ckpt, source)
        if options.get("roi_size") is None:
            options["roi_size"] = ckpt.get("roi_size")
        return cls(model, spec, **options)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, threads: int | None = None, **options: Any) -> Predictor:
        """A predictor for an ONNX file written by ``medswin export`` (spec and roi from its metadata), run by
        ONNX Runtime in float32 with the same pre-processing, windows, blending and inversion.

        Args:
            path: the ``.onnx`` file.
            threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
            **options: the constructor's options, except those that need PyTorch weights (``adapter``,
                ``compile``, a reduced-precision ``amp``); ``roi_size`` must be the exported roi.
        """
        from .onnx_runtime import OnnxModel, onnx_cuda_available

        if options.get("adapter") is not None:
            raise ValueError(f"{path}: test-time adapters update PyTorch weights; an ONNX model has none to update")
        if options.get("compile"):
            raise ValueError(f"{path}: --compile is torch.compile; an ONNX model runs in ONNX Runtime")
        amp = options.pop("amp", "auto") or "auto"
        if amp not in ("auto", "fp32"):
            raise ValueError(f"{path}: the ONNX model runs in float32 (its exported precision), not --amp {amp}")
        if options.get("device") in (None, "auto"):  # CUDA only where this onnxruntime can use it
            options["device"] = "cuda" if resolve_device(None).type == "cuda" and onnx_cuda_available() else "cpu"
        model = OnnxModel(path, resolve_device(options["device"]), threads)
        if options.get("roi_size") is None:
            options["roi_size"] = model.roi_size
        return cls(model, model.spec, amp="fp32", **options)

    # ------------------------------------------------------------------ prediction
    def _adapt(self, image: torch.Tensor) -> None:
        if self.adapter is not None:  # episodic adapters reset themselves first
            inside = (image != 0).any(1, keepdim=True) if self.spec.uses_nonzero_mask else None
            self.adapter.adapt(image, inside if inside is not None and bool(inside.any()) else None)

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Class (softmax) or region (sigmoid) probabilities ``(1, K, *S)`` for ``image`` ``(1, C, *S)``."""
        self._adapt(image)
        return self.engine(streaming=False).probabilities(self.runner(), image, sigmoid=bool(self.spec.regions))

    def streamed_labels(self, image: torch.Tensor) -> torch.Tensor:
        """The memory-bounded path: label map ``(1, *S)`` (the dataset's label values, ``uint8`` /
        ``int16``) for ``image`` ``(1, C, *S)`` on the model's grid, streamed in slabs off a rolling
        accumulator whatever the budget says; background outside the scan for nonzero-normalised data."""
        self._adapt(image)
        engine = self.engine(streaming=True, progress=True)  # large volumes: minutes of windows
        values = sorted(self.spec.labels.values())

        def to_labels(logits: torch.Tensor) -> torch.Tensor:  # one slab: region thresholds or label values
            return to_label_values(logits.sigmoid_() if self.spec.regions else logits, self.spec)

        plain_argmax = not self.spec.regions and values == list(range(len(values)))  # class index = label value
        labels = engine.labels(self.runner(), image, labeler=None if plain_argmax else to_labels)
        if self.spec.uses_nonzero_mask:
            labels[~(image != 0).any(1)] = 0
        return labels

    def load(self, image_path: str | os.PathLike | Sequence[str | os.PathLike], series_uid: str | None = None) -> Any:
        """``(data, pipeline, source)``: one case through the checked reader and the inference transforms."""
        from ..data.transforms import infer_transforms

        paths = [Path(p) for p in ([image_path] if isinstance(image_path, (str, os.PathLike)) else image_path)]
        source = str(paths[0]) if len(paths) == 1 else str(paths[0].parent)
        pipeline = infer_transforms(self.spec, series_uid, self.correction)
        data = run_pipeline(pipeline, {"image": [str(p) for p in paths]}, source)
        if not torch.isfinite(data["image"]).all():
            raise DataError(source, "image contains NaN/inf voxels after resampling")
        return data, pipeline, source

    def predict(
        self, image_path: str | os.PathLike | Sequence[str | os.PathLike], series_uid: str | None = None
    ) -> Prediction:
        """Predict one case (a file, a DICOM folder, or one file per channel) on its own grid."""
        from ..data.transforms import invert_transforms

        data, pipeline, source = self.load(image_path, series_uid)
        image = data["image"]
        if self.engine().streams(image.shape[1:], self.spec.out_channels):
            return self._predict_streamed(data, image, pipeline, source)
        probs = self.probabilities(image.as_tensor()[None])[0]
        outside = self.spec.uses_nonzero_mask
        if outside:  # carry the scan's nonzero mask through the inversion as one more channel
            probs = torch.cat([probs, (image.as_tensor() != 0).any(0, keepdim=True).float()])
        data["pred"] = MetaTensor(probs, meta=image.meta, applied_operations=image.applied_operations)
        inverted_meta = invert_transforms(pipeline, "pred", nearest=False)(data)["pred"]
        inverted, affine = inverted_meta.as_tensor(), np.asarray(inverted_meta.affine, dtype=np.float64)
        if outside:
            inside, inverted = inverted[-1] > 0.5, inverted[:-1]
        labels = to_label_values(inverted, self.spec, self.largest_component)
        if outside:
            labels[~inside] = 0
        return Prediction(labels.cpu().numpy().astype(np.int16), affine, source)

    def _predict_streamed(self, data: dict, image: MetaTensor, pipeline: Any, source: str) -> Prediction:
        """:meth:`predict` for volumes over the memory budget: streamed labels, inverted (nearest) to the input grid."""
        from ..data.transforms import invert_transforms

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
        """Predict and write ``out_path`` in format ``fmt`` (:data:`~medswin.inference.writers.OUTPUT_FORMATS`);
        an output that would replace an input, or land inside an input DICOM folder, is refused first."""
        writer = output_format(fmt)
        paths = [image_path] if isinstance(image_path, (str, os.PathLike)) else list(image_path)
        writer.check_input(paths[0])
        check_outputs([out_path], paths)
        return writer.write(self.predict(image_path, series_uid), Path(out_path), self.spec, series_uid)

    def predict_cases(
        self,
        cases: Sequence[tuple[str, list[Path]]],
        out_dir: str | os.PathLike,
        fmt: str = "nifti",
        rank: int = 0,
        world_size: int = 1,
        skip_existing: bool = False,
    ) -> list[Path]:
        """Predict many cases into ``out_dir`` (``{case}`` + the format's ending); rank r takes cases r, r+N, ...

        ``skip_existing``: leave the cases whose output file exists (outputs are written atomically, so an
        existing one is complete): a cohort run killed part-way finishes only what is missing.
        Returns the files written (and, with ``skip_existing``, those found)."""
        mine = list(cases)[rank::world_size]
        check_outputs([output_path(out_dir, case, fmt) for case, _ in mine], [p for _, ps in mine for p in ps])
        written = []
        if skip_existing:
            done = [
                (case, output_path(out_dir, case, fmt)) for case, _ in mine if output_path(out_dir, case, fmt).is_file()
            ]
            if done:
                log.info("%d of %d case(s) already predicted in %s: skipped", len(done), len(mine), out_dir)
            written += [path for _, path in done]
            mine = [(case, paths) for case, paths in mine if case not in {c for c, _ in done}]
        for case, paths in tqdm(mine, desc="predicting", disable=rank != 0 or len(mine) < 2):
            written.append(
                self.predict_file(paths if len(paths) > 1 else paths[0], output_path(out_dir, case, fmt), fmt)
            )
            log.info("%s -> %s", case, written[-1])
        return written
