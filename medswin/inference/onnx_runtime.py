"""A medswin ONNX file run by ONNX Runtime, as a volume model the :class:`~medswin.inference.Predictor` takes.

    model = OnnxModel("model.onnx")                   # the spec and the roi come from the file's metadata
    predictor = Predictor.from_onnx("model.onnx")     # the same pre-processing, windows, blending, inversion

Everything but the network stays PyTorch / MONAI: the predictor reads and resamples the volume, cuts the
windows, blends the logits and inverts them onto the input grid exactly as for a checkpoint; only each
batch of windows goes through the ONNX Runtime session (float32).  Files are opened through the checks
here: a missing, truncated or foreign file, or one without medswin's metadata, is one :class:`DataError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.errors import DataError
from ..data.spec import DatasetSpec
from ..models._sizes import SizeRule
from .onnx_export import METADATA_FORMAT, TEXT_KEYS


def _require_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "running an ONNX model needs onnxruntime: pip install 'medswin[onnx]' (or onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


def onnx_cuda_available() -> bool:
    """True when the installed onnxruntime has the CUDA execution provider (onnxruntime-gpu)."""
    return "CUDAExecutionProvider" in _require_runtime().get_available_providers()


def ort_session(path: str | os.PathLike, device: torch.device | str = "cpu", threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` on ``device`` (CPU, or CUDA through onnxruntime-gpu).

    Args:
        path: the ``.onnx`` file.
        device: ``"cpu"`` or a CUDA device (needs onnxruntime-gpu's ``CUDAExecutionProvider``).
        threads: intra-op threads (default: PyTorch's ``torch.get_num_threads()``, so both run alike).
    """
    ort = _require_runtime()
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "ONNX model not found" if not path.exists() else "is a folder, not an ONNX file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty ONNX file (0 bytes)")
    device = torch.device(device)
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(
                f"{path}: this onnxruntime runs on the CPU only (providers {ort.get_available_providers()}); "
                "install onnxruntime-gpu or use --device cpu"
            )
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    elif device.type == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ValueError(f"ONNX Runtime runs on cpu or cuda, not {device}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.log_severity_level = 3  # errors only: its graph-optimisation notes are not the user's business
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph classes
        text = " ".join(str(exc).split())
        raise DataError(path, f"not a readable ONNX model ({text[:160]})") from None


def read_metadata(session: Any, path: str | os.PathLike) -> dict[str, Any]:
    """The medswin metadata of an open session (JSON values decoded), checked to be complete."""
    props = dict(session.get_modelmeta().custom_metadata_map)
    if "medswin.spec" not in props:
        raise DataError(
            path,
            "an ONNX model without medswin's metadata (dataset spec, roi): export it with medswin export CHECKPOINT",
        )
    if props.get("medswin.format") != METADATA_FORMAT:
        raise DataError(
            path, f"medswin metadata format {props.get('medswin.format')!r}, this medswin reads {METADATA_FORMAT!r}"
        )
    try:
        meta = {k: v if k in TEXT_KEYS else json.loads(v) for k, v in props.items() if k.startswith("medswin.")}
        meta["spec"] = DatasetSpec.from_dict(meta["medswin.spec"], origin=str(path))
        roi = tuple(int(r) for r in meta["medswin.roi_size"])
        shape_in, shape_out = meta["medswin.input"]["shape"], meta["medswin.output"]["shape"]
        meta["in_channels"], meta["out_channels"] = int(shape_in[1]), int(shape_out[1])
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(path, f"its medswin metadata cannot be read ({type(exc).__name__}: {exc})") from None
    if len(roi) != 3 or min(roi) < 1:
        raise DataError(path, f"its medswin metadata gives roi {list(roi)}, not 3 positive sizes")
    meta["roi_size"] = roi
    return meta


class OnnxModel(nn.Module):
    """An exported medswin model run by ONNX Runtime: ``(B, C, *roi) -> (B, K, *roi)`` logits, any ``B``.

    A PyTorch module only so that the predictor and the sliding-window engine take it as they take a
    model (no parameters, nothing to train: test-time adapters that update weights cannot use it).

    Args:
        path: a ``.onnx`` file written by :func:`medswin.inference.onnx_export.export_onnx`.
        device: where ONNX Runtime runs (``"cpu"``; CUDA needs onnxruntime-gpu).
        threads: intra-op threads (default: ``torch.get_num_threads()``).

    Attributes: ``spec`` (the dataset spec), ``roi_size``, ``in_channels``, ``out_channels``, ``metadata``
    (the file's medswin metadata), ``size_rule`` (the one roi the graph takes).
    """

    def __init__(self, path: str | os.PathLike, device: torch.device | str = "cpu", threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = ort_session(self.path, device, threads)
        self.metadata = read_metadata(self.session, self.path)
        self.spec: DatasetSpec = self.metadata["spec"]
        self.roi_size: tuple[int, ...] = self.metadata["roi_size"]
        self.in_channels, self.out_channels = self.metadata["in_channels"], self.metadata["out_channels"]
        self.size_rule = SizeRule(
            f"the ONNX model {self.path.name}",
            self.roi_size,
            fixed=self.roi_size,
            note="the graph was exported at that roi: export again with medswin export --roi for another",
        )
        self.input_name = self.session.get_inputs()[0].name
        # where the predictor sends the windows (moved by .to(device)); ONNX Runtime reads them from host memory
        self.register_buffer("anchor", torch.zeros(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, D, H, W)`` of windows ``x`` ``(B, C, D, H, W)`` (float32, on ``x``'s device)."""
        self.size_rule.check(x.shape[2:])
        if x.shape[1] != self.in_channels:
            raise ValueError(f"the ONNX model {self.path.name} takes {self.in_channels} channel(s), got {x.shape[1]}")
        feed = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits = self.session.run(None, {self.input_name: feed})[0]
        return torch.from_numpy(logits).to(x.device)

    def extra_repr(self) -> str:
        return f"{self.path}, roi={self.roi_size}, {self.in_channels} -> {self.out_channels}"
