"""ONNX export of a volume model: dynamic batch, the roi fixed, the dataset spec in the file's metadata, checked.

    from medswin.inference.onnx_export import export_checkpoint
    export_checkpoint("runs/mni/checkpoint_best.pt", "model.onnx")     # then: medswin predict --model model.onnx

The model is exported with ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript) with
medswin's fused CPU kernels run as plain ops (:func:`medswin.layers.plain_ops`); the windowed
attention then gathers each image of the batch with the one-image plan
(:class:`~medswin.layers.window.AnyBatchWindowLayout`), so the batch axis stays dynamic while the
spatial size is the roi the sliding windows feed the model.  The file's ``metadata_props`` carry what a
predictor needs besides the graph (:data:`METADATA_KEYS`): the dataset spec (channels, labels or
regions, spacing, normalisation), the roi, the input / output shapes and the opset, so the ONNX file
alone is enough to predict (:class:`~medswin.inference.onnx_runtime.OnnxModel`).  The written file is
run once with ONNX Runtime and compared with the eager PyTorch model before it replaces anything.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data.atomic import atomic_write
from ..data.outputs import check_outputs
from ..data.spec import DatasetSpec
from ..layers import plain_ops
from ..models import check_roi, model_kind

log = logging.getLogger(__name__)

ONNX_OPSET = 20
"""Opset of the exported graph (ONNX Runtime >= 1.17 runs it; TensorRT 10 reads it)."""

METADATA_FORMAT = "1"
METADATA_KEYS = (
    "medswin.format",  # version of this metadata layout
    "medswin.version",  # medswin that exported the file
    "medswin.model_name",  # registry name (informational: the graph does not need it)
    "medswin.model_kwargs",  # JSON
    "medswin.spec",  # JSON of DatasetSpec.to_dict(): what the predictor's transforms are built from
    "medswin.roi_size",  # JSON [D, H, W]: the spatial size the graph takes
    "medswin.input",  # JSON {"name", "shape": ["batch", C, D, H, W], "dtype"}
    "medswin.output",  # JSON {"name", "shape": ["batch", K, D, H, W], "dtype", "activation"}
    "medswin.opset",
    # the same facts, readable without medswin
    "medswin.channels",  # JSON list of channel names
    "medswin.labels",  # JSON {name: value}
    "medswin.regions",  # JSON {region: [label values]} (sigmoid models), {} for softmax models
    "medswin.target_spacing",  # JSON [x, y, z] mm, or null
    "medswin.normalization",  # JSON of the spec's normalisation
)
TEXT_KEYS = ("medswin.format", "medswin.version", "medswin.model_name")
"""Metadata values stored as plain text; every other value is JSON."""
INPUT_NAME, OUTPUT_NAME = "image", "logits"
EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")  # their INFO lines list every folded constant
EXAMPLE_BATCH = 2  # torch.export specialises a dimension traced at size 1; 2 keeps the batch axis dynamic
MAX_BATCH = 1024


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, the roi, the opset, the largest logit difference between
    ONNX Runtime and eager PyTorch on the check input and the largest |logit| there (``None`` when unchecked),
    and the seconds taken."""

    path: Path
    roi_size: tuple[int, ...]
    opset: int
    max_abs_diff: float | None
    max_abs_logit: float | None
    seconds: float


class _PlainOpsForward(nn.Module):
    """``model`` with its forward under :func:`plain_ops` (what the exporter traces), main output only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with plain_ops():
            return _main_output(self.model(x))


def _main_output(y: Any) -> torch.Tensor:
    """The logits of a model's output (models returning a tuple give their main output first)."""
    return y[0] if isinstance(y, (tuple, list)) else y


def onnx_metadata(
    spec: DatasetSpec,
    roi_size: Sequence[int],
    in_channels: int,
    out_channels: int,
    opset: int,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` of an exported file (:data:`METADATA_KEYS`; every value a string).

    Args:
        spec: the dataset spec the model was trained for.
        roi_size: the spatial size ``(D, H, W)`` the graph takes.
        in_channels: ``C`` of the input ``(B, C, D, H, W)``.
        out_channels: ``K`` of the logits ``(B, K, D, H, W)``.
        opset: the graph's ONNX opset.
        model_name: the registry name, when known.
        model_kwargs: the model's constructor options, when known.
    """
    roi = [int(r) for r in roi_size]
    entry = spec.to_dict()
    values: dict[str, Any] = {
        "medswin.format": METADATA_FORMAT,
        "medswin.version": __version__,
        "medswin.model_name": model_name or "",
        "medswin.model_kwargs": model_kwargs or {},
        "medswin.spec": entry,
        "medswin.roi_size": roi,
        "medswin.input": {"name": INPUT_NAME, "shape": ["batch", int(in_channels), *roi], "dtype": "float32"},
        "medswin.output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", int(out_channels), *roi],
            "dtype": "float32",
            "activation": "sigmoid" if spec.regions else "softmax",
        },
        "medswin.opset": int(opset),
        "medswin.channels": list(spec.channel_names),
        "medswin.labels": dict(spec.labels),
        "medswin.regions": {k: list(v) for k, v in spec.regions.items()},
        "medswin.target_spacing": list(spec.target_spacing) if spec.target_spacing is not None else None,
        "medswin.normalization": dict(spec.normalization),
    }
    return {k: str(v) if k in TEXT_KEYS else json.dumps(v) for k, v in values.items()}


def export_onnx(
    model: nn.Module,
    spec: DatasetSpec,
    roi_size: Sequence[int],
    path: str | os.PathLike,
    sources: Sequence[str | os.PathLike] = (),
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    opset: int = ONNX_OPSET,
    check: bool = True,
    atol: float = 1e-3,
) -> OnnxExport:
    """Export ``model`` to an ONNX file that takes windows ``(B, C, *roi_size)`` for any ``B``.

    Args:
        model: a volume model ``(B, C, D, H, W) -> (B, K, D, H, W)`` (its weights as they are; it is put
            in eval mode).
        spec: the dataset spec the model was trained for (written into the metadata).
        roi_size: the sliding-window size ``(D, H, W)`` the graph is fixed to (checked against the model).
        path: the ``.onnx`` file, written atomically.
        sources: the files the model came from (the output must not replace one of them).
        model_name: the registry name, recorded in the metadata.
        model_kwargs: the model's constructor options, recorded in the metadata.
        opset: the ONNX opset (:data:`ONNX_OPSET`).
        check: run the written file with ONNX Runtime on a seeded random batch and compare its logits
            with the eager model's, in float32; a difference above ``atol`` times the largest |logit| (at
            least 1) is an error and nothing is written.
        atol: largest accepted logit difference, relative to the largest |logit| when that exceeds 1 (float32
            rounding grows with the logits' scale and the depth: DS-TransUNet's own fp32 logits are 1e-4 of 3
            from float64's at the tiny preset).
    """
    if model_kind(model) != "volume":
        raise ValueError(f"{type(model).__name__} takes two X-ray views: ONNX export is for volume models")
    _require_exporter()
    roi = tuple(int(r) for r in roi_size)
    check_roi(model, roi)
    in_channels = int(getattr(model, "in_channels", spec.num_channels))
    out_channels = int(getattr(model, "out_channels", spec.out_channels))
    if in_channels != spec.num_channels or out_channels != spec.out_channels:
        raise ValueError(
            f"the model maps {in_channels} -> {out_channels} channels, dataset {spec.name!r} needs "
            f"{spec.num_channels} -> {spec.out_channels}"
        )
    out = Path(path)
    if out.suffix != ".onnx":
        raise ValueError(f"{out}: the ONNX file's name must end in .onnx")
    check_outputs([out], list(sources))
    model = copy.deepcopy(model).float().cpu().eval()  # the caller's model stays where and as it is
    example = torch.randn(EXAMPLE_BATCH, in_channels, *roi, generator=torch.Generator().manual_seed(0))
    metadata = onnx_metadata(spec, roi, in_channels, out_channels, opset, model_name, model_kwargs)
    checked: list[tuple[float, float]] = []  # (max |ONNX Runtime - PyTorch|, max |logit|)
    start = time.perf_counter()

    def write(tmp: str) -> None:
        program = _torch_export(model, example, opset)
        for key, value in metadata.items():
            program.model.metadata_props[key] = value
        program.model.doc_string = f"medswin {model_name or type(model).__name__} for dataset {spec.name}"
        with open(tmp, "wb") as f:
            program.save(f)
        if check:
            checked.append(compare_with_eager(tmp, model, example))
            diff, scale = checked[-1]
            if diff > atol * max(1.0, scale):
                raise ValueError(
                    f"{out}: ONNX Runtime's logits differ from PyTorch's by {diff:.2e} (> {atol} x the largest "
                    f"|logit| {scale:.2f}); nothing written"
                )

    atomic_write(out, write)
    seconds = time.perf_counter() - start
    diff, scale = checked[-1] if checked else (None, None)
    log.info(
        "exported %s at %s (opset %d, dynamic batch) -> %s in %.0f s%s",
        model_name or type(model).__name__,
        "x".join(map(str, roi)),
        opset,
        out,
        seconds,
        f"; max |ONNX Runtime - PyTorch| {diff:.1e}" if diff is not None else "",
    )
    return OnnxExport(out, roi, int(opset), diff, scale, seconds)


def export_checkpoint(
    checkpoint: str | os.PathLike,
    path: str | os.PathLike,
    roi_size: Sequence[int] | None = None,
    **options: Any,
) -> OnnxExport:
    """Export a medswin training checkpoint at its roi (or ``roi_size``) to ``path`` (:func:`export_onnx` options).

    Args:
        checkpoint: a checkpoint written by ``medswin train``.
        path: the ``.onnx`` file.
        roi_size: the window size ``(D, H, W)``; default: the checkpoint's training roi.
        **options: :func:`export_onnx` options (``opset``, ``check``, ``atol``).
    """
    from ..checkpoint import load_checkpoint, model_from_checkpoint
    from ..models import get_entry

    ckpt = load_checkpoint(checkpoint)
    model, spec = model_from_checkpoint(ckpt, checkpoint)
    roi = roi_size or ckpt.get("roi_size") or spec.roi_size or get_entry(ckpt["model_name"]).default_roi
    return export_onnx(
        model,
        spec,
        roi,
        path,
        sources=[checkpoint],
        model_name=ckpt["model_name"],
        model_kwargs=dict(ckpt.get("model_kwargs") or {}),
        **options,
    )


def compare_with_eager(onnx_file: str | os.PathLike, model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """``(max |ONNX Runtime - PyTorch|, max |PyTorch|)`` of the logits of ``x`` ``(B, C, D, H, W)`` (float32, CPU).

    Args:
        onnx_file: the exported file.
        model: the eager model it was exported from.
        x: the input.
    """
    from .onnx_runtime import ort_session

    session = ort_session(onnx_file)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = _main_output(model(x)).numpy()
    return float(np.abs(got - expected).max()), float(np.abs(expected).max())


def _require_exporter() -> None:
    missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
    if missing:
        raise ImportError(
            f"ONNX export needs {' and '.join(missing)}: pip install 'medswin[onnx]' (onnx, onnxscript, onnxruntime)"
        )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _torch_export(model: nn.Module, example: torch.Tensor, opset: int) -> Any:
    """``torch.onnx.export(dynamo=True)`` of ``model`` under plain ops, batch dynamic; its progress printing
    and the exporter's own warnings (optional torchvision ops, deprecations) kept out of the user's output."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                _PlainOpsForward(model),
                (example,),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                verbose=False,
            )
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
