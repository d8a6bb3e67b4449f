"""Finding, running and verifying the MONAI bundles in ``bundles/<name>/`` (everything through ``monai.bundle``).

    from medswin.bundle import run_bundle, verify_bundle
    verify_bundle("swin_unetr_btcv")                                      # metadata, network in/out, configs
    run_bundle("swin_unetr_mni_tissue", "train", {"dataset_dir": "data/mni-tissue-2mm"})

The bundles live at the repository root, not inside the package; :func:`find_bundles_dir` looks
for them next to the package (a source checkout), in the current folder, or where
``$MEDSWIN_BUNDLES`` or ``bundles_dir=`` says.  The metadata schema is carried in the repository
(``bundles/schema/``) because ``verify_metadata`` would otherwise download it.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..data.errors import DataError, root_data_error
from ..models import check_roi

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
        else [os.environ.get("MEDSWIN_BUNDLES"), Path(__file__).resolve().parents[2] / "bundles", Path("bundles")]
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


def config_parser(files: Sequence[str], bundle_dir: Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """A MONAI ``ConfigParser`` over ``files`` with the bundle's metadata, ``bundle_root`` and ``overrides``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=list(files))
    parser.read_meta(f=str(bundle_dir / "configs" / "metadata.json"))
    parser.update({"bundle_root": str(bundle_dir), **dict(overrides or {})})
    return parser


# ---------------------------------------------------------------------------------------------
# running, checking, exporting
# ---------------------------------------------------------------------------------------------


ENGINE_LOGGERS = (  # log an ERROR (and a traceback) before re-raising what ends a run: medswin says it in one line
    "monai.handlers.StatsHandler",
    "ignite.engine.engine.SupervisedTrainer",
    "ignite.engine.engine.SupervisedEvaluator",
    "ignite.engine.engine.EnsembleEvaluator",
)


@contextmanager
def quiet_failures() -> Iterator[None]:
    """Within the block, MONAI's engines and StatsHandler do not log the error that ends a run (the caller
    reports it as one line), and MONAI's warning that bundle configs run code is not repeated for medswin's
    own bundles; everything else they log is kept."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    loggers = [logging.getLogger(name) for name in ENGINE_LOGGERS]
    for lg in loggers:
        lg.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"parsing config_file", category=UserWarning)
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(keep)


def check_weights(bundle_dir: Path, parser: Any, ckpt: Path) -> None:
    """Raise :class:`DataError` (naming ``ckpt``) unless it is a weights-only file whose tensors fit the config's
    ``network_def`` exactly, before MONAI's ``CheckpointLoader`` or ``ckpt_export`` read it unchecked."""
    from ..checkpoint import read_weights_only

    if ckpt.is_dir():
        raise DataError(ckpt, "is a folder, not a checkpoint file")
    state = read_weights_only(ckpt)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a medswin training checkpoint
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(ckpt, "not a state dict of tensors (MONAI bundles save the network's state_dict)")
    network = parser.get_parsed_content("network_def")
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise DataError(
            ckpt,
            f"its weights do not fit this bundle's network ({parser.get_parsed_content('model_name')}): "
            f"{len(missing)} missing, {len(unexpected)} unknown, {len(wrong)} of another shape (e.g. {first}); "
            "another model or configuration?",
        )


def check_roi_size(parser: Any) -> None:
    """Raise ``ValueError`` when the config's ``roi_size`` does not fit its network (before any window runs)."""
    if "roi_size" in parser:
        check_roi(parser.get_parsed_content("network_def"), [int(s) for s in parser.get_parsed_content("roi_size")])


def _check_paths(bundle_dir: Path, config: str, parser: Any) -> None:
    """Clear errors, before MONAI starts, for a missing dataset folder, missing or unfit trained weights and a roi
    the network cannot take."""
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
        check_weights(bundle_dir, parser, ckpt)
    check_roi_size(parser)


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
    _check_paths(bundle_dir, config, config_parser(files, bundle_dir, values))
    log.info("bundle %s: running %s (%s)", bundle_dir.name, config, ", ".join(Path(f).name for f in files))
    try:
        with quiet_failures():
            run(
                run_id=run_id,
                meta_file=str(bundle_dir / "configs" / "metadata.json"),
                config_file=files,
                logging_file=False,
                **values,
            )
    except Exception as exc:
        cause = root_data_error(exc)
        if cause is not None:
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
    parser = config_parser(config_files(bundle_dir, config), bundle_dir)
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
    parser = config_parser(files, bundle_dir, overrides)
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
