"""MONAI bundles of medswin models: find, run, verify and export them, and the few config components MONAI lacks.

The bundles live at the repository root in ``bundles/<name>/`` (MONAI bundle layout: ``configs/``
with ``metadata.json``, ``train.json``, ``inference.json``, ``evaluate.json``,
``multi_gpu_train.json``, ``logging.conf``; ``docs/README.md``; ``LICENSE``), not inside the
package; :func:`find_bundles_dir` looks for them next to the package (a source checkout), in the
current folder, or where ``$MEDSWIN_BUNDLES`` or ``bundles_dir=`` says::

    from medswin.bundle import run_bundle, verify_bundle, export_bundle
    verify_bundle("swin_unetr_btcv")                                      # metadata, network in/out, configs
    run_bundle("swin_unetr_mni_tissue", "train", {"dataset_dir": "data/mni-tissue-2mm"})
    export_bundle("swin_unetr_mni_tissue")                                # models/model.pt -> models/model.ts

Everything goes through ``monai.bundle`` (``run``, ``verify_metadata``, ``verify_net_in_out``,
``ckpt_export``); plain ``python -m monai.bundle ...`` runs the same configs.  The metadata schema
is carried in the repository (``bundles/schema/``) because ``verify_metadata`` would otherwise
download it.

Config components defined here (referenced by dotted path from the configs):

* :func:`datalist` -- the cases of a dataset folder in any layout medswin reads, split into
  training / validation, or the inputs to predict;
* :class:`BiplanarPair` -- Swin-X2S with its two views stacked as channels ``(B, 2C, H, W)``, so
  that the bundle network has the single input MONAI's inferers, ``verify_net_in_out`` and
  ``ckpt_export`` expect;
* :class:`RegionsToLabelsd` -- region probabilities (BraTS TC/WT/ET) to the dataset's label map;
* :class:`BiplanarLabelGridd` -- puts a Swin-X2S prediction on the label grid recorded next to its
  coronal view, so ``SaveImaged`` writes it in world coordinates;
* :func:`for_export` -- the network as ``ckpt_export`` can trace it (``network_export`` in every
  ``inference.json``): medswin's fused CPU kernels are Python ``autograd.Function`` s, which
  TorchScript cannot serialise, so while tracing they run as the equivalent plain PyTorch ops
  (:func:`plain_ops`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import logging
import os
import tempfile
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from torch import nn

from .data.errors import DataError

log = logging.getLogger(__name__)

CONFIGS: dict[str, tuple[str, ...]] = {
    "train": ("train.json",),
    "inference": ("inference.json",),
    "evaluate": ("evaluate.json",),
    "multi_gpu_train": ("train.json", "multi_gpu_train.json"),  # merged in this order, as MONAI does
}
SCHEMA_FILE = "schema/meta_schema_20220324.json"  # relative to the bundles folder
WORKFLOW_IDS = ("initialize", "run", "finalize", "training", "evaluating")  # expressions that do work when parsed


# ---------------------------------------------------------------------------------------------
# finding bundles
# ---------------------------------------------------------------------------------------------


def find_bundles_dir(bundles_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the bundles: ``bundles_dir``, else ``$MEDSWIN_BUNDLES``, else ``bundles/``
    next to the package (a source checkout), else ``./bundles``."""
    candidates = (
        [bundles_dir]
        if bundles_dir
        else [os.environ.get("MEDSWIN_BUNDLES"), Path(__file__).resolve().parents[1] / "bundles", Path("bundles")]
    )
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c).resolve()
    where = bundles_dir or "$MEDSWIN_BUNDLES, the repository's bundles/ or ./bundles"
    raise ValueError(
        f"no bundles folder found (looked in {where}); the bundles ship with the medswin source "
        "repository: pass --bundles-dir PATH/TO/medswin/bundles"
    )


def list_bundles(bundles_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the bundles (sub-folders with ``configs/metadata.json``), sorted."""
    root = find_bundles_dir(bundles_dir)
    return sorted(d.name for d in root.iterdir() if (d / "configs" / "metadata.json").is_file())


def resolve_bundle(bundle: str | os.PathLike, bundles_dir: str | os.PathLike | None = None) -> Path:
    """A bundle folder from a name in the bundles folder or a path; unknown names list the known ones."""
    path = Path(bundle)
    if (path / "configs" / "metadata.json").is_file():
        return path.resolve()
    names = list_bundles(bundles_dir)
    if str(bundle) in names:
        return find_bundles_dir(bundles_dir) / str(bundle)
    close = difflib.get_close_matches(str(bundle), names, n=2)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown bundle {str(bundle)!r}.{hint} Available: {', '.join(names)}")


def config_files(bundle_dir: str | os.PathLike, config: str = "inference") -> list[str]:
    """The config file(s) of ``config`` (train | inference | evaluate | multi_gpu_train) in a bundle."""
    if config not in CONFIGS:
        raise ValueError(f"unknown bundle config {config!r}; use one of {', '.join(CONFIGS)}")
    files = [Path(bundle_dir) / "configs" / name for name in CONFIGS[config]]
    for f in files:
        if not f.is_file():
            raise ValueError(f"{f}: bundle config file missing")
    return [str(f) for f in files]


def schema_file(bundle_dir: str | os.PathLike) -> Path:
    """The metadata JSON schema carried next to the bundles (``bundles/schema/``)."""
    path = Path(bundle_dir).resolve().parent / SCHEMA_FILE
    if not path.is_file():
        raise ValueError(f"{path}: metadata schema missing (it ships in the repository's bundles/schema/)")
    return path


def _parser(files: Sequence[str], bundle_dir: Path, overrides: Mapping[str, Any] | None = None):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=list(files))
    parser.read_meta(f=str(bundle_dir / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(bundle_dir), **dict(overrides or {})})
    return parser


# ---------------------------------------------------------------------------------------------
# running, checking, exporting
# ---------------------------------------------------------------------------------------------


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _check_paths(bundle_dir: Path, config: str, parser: Any) -> None:
    """Clear errors, before MONAI starts, for a missing dataset folder or missing trained weights."""
    name = bundle_dir.name
    if "dataset_dir" in parser:
        data = parser.get_parsed_content("dataset_dir")
        if not Path(str(data)).exists():
            raise ValueError(
                f"bundle {name}: dataset_dir {str(data)!r} does not exist; point it at the data with "
                f"--override dataset_dir=PATH (see {bundle_dir / 'docs' / 'README.md'})"
            )
    if config in ("inference", "evaluate") and "ckpt_path" in parser:
        ckpt = Path(str(parser.get_parsed_content("ckpt_path")))
        if not ckpt.is_file():
            raise ValueError(
                f"bundle {name}: no trained weights at {ckpt}; train first (medswin bundle run {name} "
                "--config train) or pass --override ckpt_path=PATH"
            )


def run_bundle(
    bundle: str | os.PathLike,
    config: str = "inference",
    overrides: Mapping[str, Any] | None = None,
    bundles_dir: str | os.PathLike | None = None,
    run_id: str = "run",
) -> None:
    """Run a bundle config through ``monai.bundle.run`` (what ``python -m monai.bundle run`` does).

    ``overrides`` maps config ids to values (``{"dataset_dir": "/data/BTCV", "network_def#name":
    "swin_unetr_tiny"}``); ``bundle_root`` defaults to the bundle folder.  The bundle's
    ``logging.conf`` is not applied (the caller's logging stays as it is).  A missing dataset
    folder or checkpoint is reported before anything starts; a medswin data error raised inside
    MONAI's config machinery is re-raised as itself.
    """
    from monai.bundle import run

    bundle_dir = resolve_bundle(bundle, bundles_dir)
    files = config_files(bundle_dir, config)
    values = {"bundle_root": str(bundle_dir), **dict(overrides or {})}
    _check_paths(bundle_dir, config, _parser(files, bundle_dir, values))
    log.info("bundle %s: running %s (%s)", bundle_dir.name, config, ", ".join(Path(f).name for f in files))
    try:
        run(
            run_id=run_id,
            meta_file=str(bundle_dir / "configs" / "metadata.json"),
            config_file=files,
            logging_file=False,
            **values,
        )
    except Exception as exc:
        cause = _root_cause(exc)
        if isinstance(cause, DataError):
            raise cause from None
        raise
    finally:
        _resync_ignite()


def _resync_ignite() -> None:
    """Point ignite's cached distributed context at the current one: a multi-GPU config destroys its
    process group at the end, and a stale ignite context would make later MONAI metrics in this
    process (``DiceMetric.aggregate``) try to all-gather over the destroyed group."""
    try:
        import ignite.distributed as idist
    except ImportError:
        return
    idist.sync()


_LOCATOR: list[Any] = []


def _locator() -> Any:
    """One MONAI ``ComponentLocator`` for every check (building its table of MONAI names takes seconds)."""
    from monai.bundle.config_item import ComponentLocator

    if not _LOCATOR:
        _LOCATOR.append(ComponentLocator())
    return _LOCATOR[0]


def check_targets(config_file: str | os.PathLike) -> list[str]:
    """Problems with the ``_target_`` components of a config file, found without instantiating anything:
    a target that does not resolve to a callable, or an argument its signature does not take (what broke
    MONAI model-zoo bundles when ``SwinUNETR`` lost ``img_size``)."""
    from monai.bundle import ConfigComponent, ConfigParser
    from monai.utils.module import locate

    problems: list[str] = []
    locator = _locator()

    def walk(node: Any, where: str) -> Iterator[tuple[str, dict]]:
        if isinstance(node, Mapping):
            if ConfigComponent.is_instantiable(node):
                yield where, dict(node)
            for key, value in node.items():
                yield from walk(value, f"{where}#{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}#{i}")

    content = ConfigParser.load_config_file(str(config_file))
    for where, node in walk(content, ""):
        target = node["_target_"]
        if not isinstance(target, str) or target.startswith(("$", "@")):
            continue
        modname = ConfigComponent(node, id=where, locator=locator).resolve_module_name()
        component = locate(modname)
        if component is None or not callable(component):
            problems.append(
                f"{Path(config_file).name}: {where}: _target_ {target!r} does not resolve to a class or function"
            )
            continue
        try:
            params = inspect.signature(component).parameters.values()
        except (TypeError, ValueError):  # builtins without a signature
            continue
        if any(p.kind == p.VAR_KEYWORD for p in params):
            continue
        accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(k for k in node if k not in ConfigComponent.non_arg_keys and k not in accepted)
        if unknown:
            problems.append(f"{Path(config_file).name}: {where}: {modname} does not take {unknown}")
    return problems


def missing_properties(bundle_dir: str | os.PathLike, config: str) -> list[str]:
    """Required MONAI bundle properties (``monai.bundle.properties``) whose config ids are absent."""
    from monai.bundle.properties import InferProperties, MetaProperties, TrainProperties
    from monai.utils import BundleProperty, BundlePropertyConfig

    bundle_dir = Path(bundle_dir)
    parser = _parser(config_files(bundle_dir, config), bundle_dir)
    props = {**(TrainProperties if config in ("train", "multi_gpu_train") else InferProperties), **MetaProperties}
    return [
        f"{config}: property {name!r} (id {p[BundlePropertyConfig.ID]!r})"
        for name, p in props.items()
        if p.get(BundleProperty.REQUIRED) and p[BundlePropertyConfig.ID] not in parser
    ]


def verify_bundle(
    bundle: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    bundles_dir: str | os.PathLike | None = None,
    n: int = 2,
    device: str = "cpu",
) -> list[str]:
    """MONAI's ``verify_metadata`` (against the schema in ``bundles/schema/``) and ``verify_net_in_out``
    (fake input of the metadata's shape with ``n`` for ``"32*n"``; ``n=2`` because a 32^3 input leaves
    a 1-voxel bottleneck), then :func:`check_targets` and :func:`missing_properties` for every config.

    Returns one line per check passed; raises ``ValueError`` listing every problem found.
    """
    from monai.bundle import verify_metadata, verify_net_in_out

    bundle_dir = resolve_bundle(bundle, bundles_dir)
    meta = str(bundle_dir / "configs" / "metadata.json")
    schema = schema_file(bundle_dir)
    verify_metadata(meta_file=meta, filepath=str(schema))
    done = [f"metadata.json is valid against {schema.name}"]
    values = dict(overrides or {})
    verify_net_in_out(
        net_id="network_def",
        meta_file=meta,
        config_file=config_files(bundle_dir, "inference"),
        device=device,
        n=n,
        **values,
    )
    done.append(f"network_def maps the metadata's input to its output channels and dtype (n={n})")
    files = sorted({f for names in CONFIGS.values() for f in names})
    problems = [p for f in files for p in check_targets(bundle_dir / "configs" / f)]
    problems += [p for config in CONFIGS for p in missing_properties(bundle_dir, config)]
    if problems:
        raise ValueError(f"bundle {bundle_dir.name}: " + "; ".join(dict.fromkeys(problems)))
    done.append(
        f"every _target_ of {', '.join(files)} resolves and "
        "takes its arguments; the required MONAI bundle properties are defined"
    )
    return done


def instantiate_components(
    bundle: str | os.PathLike,
    config: str,
    overrides: Mapping[str, Any] | None = None,
    bundles_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Instantiate every ``_target_`` component and top-level item of a config (not the workflow
    expressions ``initialize``/``run``/...); returns ``{id: object}``.  Needs the data (``dataset_dir``)."""
    bundle_dir = resolve_bundle(bundle, bundles_dir)
    files = config_files(bundle_dir, config)
    parser = _parser(files, bundle_dir, overrides)
    parser.parse(reset=True)
    content = parser.get()
    stack = [(k, v) for k, v in content.items() if k not in WORKFLOW_IDS and k not in ("_meta_", "imports")]
    out: dict[str, Any] = {}
    while stack:
        where, node = stack.pop(0)
        if "#" not in where or (isinstance(node, Mapping) and "_target_" in node):
            out[where] = parser.get_parsed_content(where)  # cached: a component is built once
        children = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, list) else ()
        stack += [(f"{where}#{k}", v) for k, v in children if isinstance(v, (Mapping, list))]
    return out


def trace_input_shape(
    bundle: str | os.PathLike, overrides: Mapping[str, Any] | None = None, bundles_dir: str | os.PathLike | None = None
) -> list[int]:
    """``[1, C, *roi]`` for tracing: channels from the metadata, spatial size from the inference
    config's ``roi_size`` (``view_size`` for biplanar bundles), the size the inferer feeds the network."""
    bundle_dir = resolve_bundle(bundle, bundles_dir)
    parser = _parser(config_files(bundle_dir, "inference"), bundle_dir, overrides)
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
    control flow (a ``ModuleList`` iterated with a run-time list, autocast checks) and
    ``torch.export`` stops at data-dependent sizes in the window gathers.  The traced module is
    specialised to that input size, which is what sliding-window inference feeds it.  The export is written atomically,
    reloaded with ``torch.jit.load`` and compared with the eager ``network_def`` (fused kernels) on
    a random input (``atol``); a mismatch is an error.
    """
    from monai.bundle import ckpt_export

    bundle_dir = resolve_bundle(bundle, bundles_dir)
    values = {"bundle_root": str(bundle_dir), **dict(overrides or {})}
    default = Path(
        str(_parser(config_files(bundle_dir, "inference"), bundle_dir, values).get_parsed_content("ckpt_path"))
    )
    ckpt = Path(ckpt_file or default)
    if not ckpt.is_file():
        raise ValueError(f"bundle {bundle_dir.name}: no checkpoint at {ckpt}; train first or pass the checkpoint file")
    out = Path(out_file or default.with_suffix(".ts"))
    out.parent.mkdir(parents=True, exist_ok=True)
    shape = trace_input_shape(bundle_dir, values)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ts", dir=out.parent)
    os.close(fd)
    try:
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
        )  # compared with the eager model below
        diff = compare_export(bundle_dir, tmp, ckpt, shape, values)
        if diff > atol:
            raise ValueError(
                f"bundle {bundle_dir.name}: the traced model differs from the eager one by {diff:.2e} (> {atol})"
            )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info(
        "bundle %s: exported %s -> %s (traced at %s, max |traced - eager| %.1e)",
        bundle_dir.name,
        ckpt,
        out,
        shape,
        diff,
    )
    return out


def compare_export(
    bundle_dir: Path,
    ts_file: str | os.PathLike,
    ckpt_file: str | os.PathLike,
    shape: Sequence[int],
    overrides: Mapping[str, Any] | None = None,
) -> float:
    """Max absolute difference between the TorchScript file and the eager ``network_def`` with the
    checkpoint's weights, on one seeded random input of ``shape`` (float32, CPU)."""
    parser = _parser(config_files(bundle_dir, "inference"), bundle_dir, overrides)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(str(ckpt_file), map_location="cpu", weights_only=True))
    traced = torch.jit.load(str(ts_file), map_location="cpu")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    net.eval()
    with torch.no_grad():
        return float((traced(x) - net(x)).abs().max())


def _instance_norm_act(
    x: torch.Tensor, residual: torch.Tensor | None, slope: float | None, eps: float, inplace: bool
) -> torch.Tensor:
    """``leaky_relu(instance_norm(x) + residual)`` in plain ops; float32 two-pass statistics, as the fused kernel."""
    dims = tuple(range(2, x.dim()))
    xf = x.float()
    centred = xf - xf.mean(dims, keepdim=True)
    y = (centred * torch.rsqrt(centred.pow(2).mean(dims, keepdim=True) + eps)).to(x.dtype)
    y = y + residual if residual is not None else y
    return F.leaky_relu(y, slope) if slope is not None else y


def _gather_rows(
    x: torch.Tensor,
    index: torch.Tensor,
    zero_rows: torch.Tensor,
    inverse: torch.Tensor,
    inverse_zero_rows: torch.Tensor,
) -> torch.Tensor:
    """``x[index]`` with the padding rows zeroed, in plain ops."""
    out = x.index_select(0, index)
    return out.index_fill(0, zero_rows, 0) if zero_rows.numel() else out


@contextmanager
def plain_ops() -> Iterator[None]:
    """Within the block, medswin's fused CPU kernels that are Python ``autograd.Function`` s (the
    instance norm + residual + LeakyReLU, the window gathers) run as the same computation in plain
    PyTorch ops, which ``torch.jit.trace`` records and TorchScript serialises.  Meant for export only
    (slower, no custom backward); the previous functions are restored on exit."""
    from .layers import norm, window

    swaps = ((norm._InstanceNormAct, _instance_norm_act), (window._GatherRows, _gather_rows))
    own = [cls.__dict__.get("apply") for cls, _ in swaps]  # normally None: apply is inherited from Function
    for cls, fn in swaps:
        cls.apply = staticmethod(fn)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for (cls, _), previous in zip(swaps, own):
            if previous is None:
                del cls.apply
            else:
                cls.apply = previous  # type: ignore[method-assign]


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


# ---------------------------------------------------------------------------------------------
# config components
# ---------------------------------------------------------------------------------------------


def datalist(
    dataset_dir: str | os.PathLike,
    section: str = "training",
    dataset: str | None = None,
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """MONAI data dicts of a dataset folder, in any layout :mod:`medswin.data.datalist` reads.

    ``section``: ``training`` / ``validation`` (the layout's own validation list when it has one, else
    fold ``fold`` of a seeded ``n_folds``-fold split of the labelled cases; fewer folds for fewer
    cases, and a single case is used for both), or ``inference`` (the images of the test section,
    else of the training cases; also a single file or a folder of volumes).  ``dataset`` names the
    registry entry when the layout needs it (BraTS file naming, nnU-Net channel count).
    """
    from .data.datalist import build_datalist, detect_layout, kfold_split, to_monai
    from .data.spec import get_dataset_spec

    if section not in ("training", "validation", "inference"):
        raise ValueError(f"section must be training, validation or inference, got {section!r}")
    root = Path(dataset_dir)
    if not root.exists():
        raise DataError(root, "dataset folder not found (set the bundle's dataset_dir)")
    spec = get_dataset_spec(dataset) if dataset else None
    if section == "inference":
        try:
            layout = detect_layout(root) if root.is_dir() else None
        except DataError:  # a plain folder of volumes (or DICOM series)
            layout = None
        if layout is None:
            from .inference.predictor import resolve_inputs

            inputs = resolve_inputs(root, spec)
            return [{"image": [str(p) for p in paths] if len(paths) > 1 else str(paths[0])} for _, paths in inputs]
        sections = build_datalist(root, spec)
        items = to_monai(sections.get("test") or sections.get("training", []))
        return [{k: v for k, v in it.items() if k not in ("label", "case")} for it in items]
    sections = build_datalist(root, spec)
    train = [c for c in to_monai(sections.get("training", [])) if "label" in c]
    if sections.get("validation"):
        val = [c for c in to_monai(sections["validation"]) if "label" in c]
        return train if section == "training" else val
    if not train:
        raise DataError(root, "no labelled training cases")
    if len(train) == 1:
        log.warning("%s: one labelled case, used for training and validation", root)
        return train
    k = min(n_folds, len(train))
    tr, va = kfold_split(train, k, fold % k, seed)
    return tr if section == "training" else va


class BiplanarPair(nn.Module):
    """A biplanar model (Swin-X2S) with one input: the coronal and sagittal views stacked as channels.

    ``forward(x)`` with ``x`` ``(B, 2C, H, W)`` (channels ``[:C]`` coronal, ``[C:]`` sagittal) returns
    the model's output for the two views: ``(B, K, H, H, W)`` logits in eval mode, the per-view dict
    in training mode.  MONAI's inferers, ``verify_net_in_out`` and ``ckpt_export`` take single-input
    networks; the state dict is the model's under ``model.``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not getattr(model, "biplanar", False):
            raise ValueError(f"BiplanarPair wraps a biplanar model (two X-ray views), got {type(model).__name__}")
        self.model = model
        self.view_channels = int(model.in_channels)
        self.in_channels, self.out_channels = 2 * self.view_channels, int(model.out_channels)
        self.size_divisor = getattr(model, "size_divisor", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """``(B, 2C, H, W)`` -> the wrapped model's output for ``(x[:, :C], x[:, C:])``."""
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.in_channels):
            raise ValueError(f"expected the two views stacked as (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        c = self.view_channels
        return self.model(x[:, :c], x[:, c:])


class RegionsToLabelsd(MapTransform):
    """Region probabilities ``(R, X, Y, Z)`` -> label map ``(1, X, Y, Z)`` with the dataset's values
    (each region thresholded at ``threshold``, nested regions painted over larger ones: BraTS 2021
    WT -> 2, TC -> 1, ET -> 4); see :func:`medswin.inference.postprocess.regions_to_labels`."""

    def __init__(
        self,
        keys: KeysCollection,
        regions: Mapping[str, Sequence[int]],
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        from .inference.postprocess import region_label_values

        region_label_values(regions)  # fails now, not at the first case, if the regions are not nested sets
        self.regions, self.threshold = {k: tuple(v) for k, v in regions.items()}, threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Convert every key present (MetaTensor meta data kept)."""
        from .inference.postprocess import regions_to_labels

        d = dict(data)
        for key in self.key_iterator(d):
            probs = d[key]
            if probs.shape[0] != len(self.regions):
                raise ValueError(
                    f"{key}: {probs.shape[0]} channels for {len(self.regions)} regions {list(self.regions)}"
                )
            labels = regions_to_labels(torch.as_tensor(probs), self.regions, self.threshold)[None]
            d[key] = MetaTensor(labels, meta=probs.meta) if isinstance(probs, MetaTensor) else labels
        return d


class BiplanarLabelGridd(MapTransform):
    """A Swin-X2S prediction ``(K, H, H, W)`` as a MetaTensor on the view-aligned label grid.

    The affine is the one recorded next to the coronal view by ``medswin data prepare-x2s`` / ``drr``
    (``meta/{case}_drr.json`` or ``drr.json``), else ``spacing`` mm voxels at the origin; the file
    name becomes ``{case}`` (the view's name without ``_coronal``) so ``SaveImaged`` writes
    ``{case}{postfix}.nii.gz``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        view_key: str = "image_coronal",
        spacing: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.view_key, self.spacing = view_key, spacing

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Attach the label-grid affine and the case name to every key present."""
        from .data.biplanar import label_affine_for

        d = dict(data)
        view = d[self.view_key]
        source = view.meta.get("filename_or_obj") if isinstance(view, MetaTensor) else view
        if not source:
            raise ValueError(f"{self.view_key}: no file name to find the DRR geometry from")
        source = Path(str(source))
        affine = label_affine_for(source)
        if affine is None:
            affine = np.diag([self.spacing, self.spacing, self.spacing, 1.0])
            log.info("no DRR geometry next to %s: writing %g mm voxels at the origin", source, self.spacing)
        name = source.name.split("_coronal")[0].split("_sagittal")[0].removesuffix(".nii.gz").removesuffix(".nii")
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key])
            meta = {
                "filename_or_obj": str(source.parent / f"{name}.nii.gz"),
                "original_affine": affine,
                "spatial_shape": np.asarray(pred.shape[1:]),
            }
            d[key] = MetaTensor(pred, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
        return d
