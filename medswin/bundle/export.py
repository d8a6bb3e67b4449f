"""Export of a bundle's trained checkpoint, checked: TorchScript (``monai.bundle.ckpt_export`` by tracing) or
ONNX (medswin's exporter, with the dataset spec in the file's metadata).

    from medswin.bundle import export_bundle, export_bundle_onnx
    export_bundle("swin_unetr_mni_tissue")             # models/model.pt -> models/model.ts
    export_bundle_onnx("swin_unetr_mni_tissue")        # models/model.pt -> models/model.onnx

``network_export`` in every ``inference.json`` is :func:`for_export` of ``network_def``: the same
weights, with medswin's fused CPU kernels run as plain ops while traced
(:func:`medswin.layers.plain_ops`), so TorchScript can serialise it.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.atomic import atomic_write
from ..data.outputs import check_outputs
from ..layers import plain_ops
from .runner import check_roi_size, check_weights, config_files, config_parser, quiet_failures, resolve_bundle

log = logging.getLogger(__name__)


def trace_input_shape(
    bundle: str | os.PathLike, overrides: Mapping[str, Any] | None = None, bundles_dir: str | os.PathLike | None = None
) -> list[int]:
    """``[1, C, *roi]`` for tracing: channels from the metadata, spatial size from the inference
    config's ``roi_size`` (``view_size`` for biplanar bundles), the size the inferer feeds the network."""
    bundle_dir = resolve_bundle(bundle, bundles_dir)
    parser = config_parser(config_files(bundle_dir, "inference"), bundle_dir, overrides)
    channels = int(parser.get_parsed_content("_meta_#network_data_format#inputs#image#num_channels"))
    key = "roi_size" if "roi_size" in parser else "view_size"
    return [1, channels, *(int(s) for s in parser.get_parsed_content(key))]


def export_bundle(
    bundle: str | os.PathLike,
    ckpt_file: str | os.PathLike | None = None,
    out_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    bundles_dir: str | os.PathLike | None = None,
    atol: float = 1e-4,
) -> Path:
    """Export the checkpoint (default: the config's ``ckpt_path``, ``models/model.pt``) to TorchScript
    (default: ``models/model.ts`` next to it) with ``monai.bundle.ckpt_export``.

    The config's ``network_export`` (:func:`for_export` of ``network_def``) is traced
    (``use_trace=True``) at the inference roi: ``torch.jit.script`` rejects the models' Python
    control flow (a ``ModuleList`` iterated with a run-time list, autocast checks); ``torch.export`` of the
    same network is the ONNX path (:func:`export_bundle_onnx`).  The traced module is
    specialised to that input size, which is what sliding-window inference feeds it.  The export is written atomically,
    reloaded with ``torch.jit.load`` and compared with the eager ``network_def`` (fused kernels) on
    a random input (``atol``); a mismatch is an error.
    """
    from monai.bundle import ckpt_export

    bundle_dir, values, parser, ckpt, default = _checked_checkpoint(bundle, ckpt_file, overrides, bundles_dir)
    out = Path(out_file or default.with_suffix(".ts"))
    check_outputs([out], [ckpt])
    shape = trace_input_shape(bundle_dir, values)
    diffs: list[float] = []

    def export_and_check(tmp: str) -> None:
        with quiet_failures(), warnings.catch_warnings():
            # tracing specialises the module to the roi (documented): its TracerWarnings say so, once per branch
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            ckpt_export(
                net_id="network_export",
                filepath=tmp,
                ckpt_file=str(ckpt),
                meta_file=str(bundle_dir / "configs" / "metadata.json"),
                config_file=config_files(bundle_dir, "inference"),
                use_trace=True,
                input_shape=shape,
                converter_kwargs={"check_trace": False},
                **values,
            )  # compared with the eager model before the rename
        diffs.append(compare_export(bundle_dir, tmp, ckpt, shape, values))
        if diffs[-1] > atol:
            raise ValueError(
                f"bundle {bundle_dir.name}: the traced model differs from the eager one by {diffs[-1]:.2e} (> {atol})"
            )

    atomic_write(out, export_and_check)
    log.info(
        "bundle %s: exported %s -> %s (traced at %s, max |traced - eager| %.1e)",
        bundle_dir.name,
        ckpt,
        out,
        shape,
        diffs[-1],
    )
    return out


def export_bundle_onnx(
    bundle: str | os.PathLike,
    ckpt_file: str | os.PathLike | None = None,
    out_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    bundles_dir: str | os.PathLike | None = None,
) -> Path:
    """Export the checkpoint (default: ``models/model.pt``) to ONNX (default: ``models/model.onnx`` next to it)
    with :func:`medswin.inference.onnx_export.export_onnx`: the inference config's ``network_def`` with the
    checkpoint's weights at its ``roi_size``, dynamic batch, the bundle's dataset spec in the metadata (so
    ``medswin predict --model models/model.onnx`` needs nothing else), checked against PyTorch in ONNX Runtime.

    Args:
        bundle: bundle name or folder.
        ckpt_file: the weights (a state dict of ``network_def``).
        out_file: the ``.onnx`` file.
        overrides: config overrides (``model_name``, ``roi_size``, ...).
        bundles_dir: where the bundles are.
    """
    from ..data.spec import get_dataset_spec
    from ..inference.onnx_export import export_onnx

    bundle_dir, _, parser, ckpt, default = _checked_checkpoint(bundle, ckpt_file, overrides, bundles_dir)
    dataset = parser.get_parsed_content("dataset_name") if "dataset_name" in parser else None
    if not dataset or "roi_size" not in parser:
        raise ValueError(
            f"bundle {bundle_dir.name}: ONNX export is for volume-model bundles (a dataset and a roi_size)"
        )
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(str(ckpt), map_location="cpu", weights_only=True))
    options = {
        k: parser.get_parsed_content(f"network_def#{k}")
        for k in parser["network_def"]
        if not k.startswith("_") and k not in ("name", "in_channels", "out_channels")
    }
    done = export_onnx(
        net,
        get_dataset_spec(str(dataset)),
        [int(s) for s in parser.get_parsed_content("roi_size")],
        Path(out_file or default.with_suffix(".onnx")),
        sources=[ckpt],
        model_name=str(parser.get_parsed_content("model_name")) if "model_name" in parser else None,
        model_kwargs=options,
    )
    return done.path


def _checked_checkpoint(
    bundle: str | os.PathLike,
    ckpt_file: str | os.PathLike | None,
    overrides: Mapping[str, Any] | None,
    bundles_dir: str | os.PathLike | None,
) -> tuple[Path, dict[str, Any], Any, Path, Path]:
    """``(bundle folder, config values, inference parser, checkpoint, the config's ckpt_path)`` for an export: the
    checkpoint exists, is a readable weights-only file that fits ``network_def``, and the roi fits the network."""
    bundle_dir = resolve_bundle(bundle, bundles_dir)
    values = {"bundle_root": str(bundle_dir), **dict(overrides or {})}
    parser = config_parser(config_files(bundle_dir, "inference"), bundle_dir, values)
    default = Path(str(parser.get_parsed_content("ckpt_path")))
    ckpt = Path(ckpt_file or default)
    if not ckpt.exists():
        raise ValueError(f"bundle {bundle_dir.name}: no checkpoint at {ckpt}; train first or pass the checkpoint file")
    check_weights(bundle_dir, parser, ckpt)
    check_roi_size(parser)
    return bundle_dir, values, parser, ckpt, default


def compare_export(
    bundle_dir: Path,
    ts_file: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    shape: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
) -> float:
    """Max absolute difference between the TorchScript file and the eager ``network_def`` with the
    checkpoint's weights, on one seeded random input of ``shape`` (float32, CPU)."""
    parser = config_parser(config_files(bundle_dir, "inference"), bundle_dir, overrides)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(str(ckpt_file), map_location="cpu", weights_only=True))
    traced = torch.jit.load(str(ts_file), map_location="cpu")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        return float((traced(x) - net(x)).abs().max())


def for_export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (same weights and state-dict keys) whose forward runs under :func:`plain_ops`,
    so that ``ckpt_export --use_trace True`` of it writes a TorchScript file ``torch.jit.load`` reads."""
    out = copy.deepcopy(model)
    forward = out.forward

    @functools.wraps(forward)
    def traced_forward(*args: Any, **kwargs: Any) -> Any:
        with plain_ops():
            return forward(*args, **kwargs)

    out.forward = traced_forward  # type: ignore[method-assign]
    return out
