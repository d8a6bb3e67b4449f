"""Dataset specifications: ``datasets.yaml`` entries loaded into validated :class:`DatasetSpec` objects.

The built-in registry ships inside the package (``medswin/data/datasets.yaml``, linked from the
repository root); users add or override entries with their own YAML files::

    specs = load_dataset_specs(["my_datasets.yaml"])
    spec = get_dataset_spec("btcv")
    spec.out_channels   # 14 (background + 13 organs)

Only what the code cannot guess is required: ``channel_names``, ``labels`` and ``file_ending``
(enough to check, evaluate or predict).  Everything else has a default (``DEFAULTS``); the keys
that matter for training (``target_spacing``, ``normalization``, ``roi_size``) are listed in
``spec.defaulted`` so the trainer can warn when it runs on a guess.  ``license`` is accepted for
``licence``.  Every validation error names the file, the entry and the key.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import DataError

log = logging.getLogger(__name__)

LAYOUTS = ("decathlon", "nnunet", "brats", "btcv", "flat", "biplanar")
TASKS = ("segmentation", "biplanar")
FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", "dicom")
NORMALIZATIONS = ("ct", "zscore", "none")
REQUIRED = ("channel_names", "labels", "file_ending")
OPTIONAL = (
    "description",
    "task",
    "layout",
    "target_spacing",
    "normalization",
    "roi_size",
    "licence",
    "source",
    "regions",
    "case_pattern",
    "channel_suffixes",
    "citation",
)
ALIASES = {"license": "licence"}  # accepted spelling -> the key it stands for
TRAINING_KEYS = ("target_spacing", "normalization", "roi_size")  # defaults here change what a model learns
DEFAULT_NORMALIZATION = {"type": "zscore", "nonzero": False, "channel_wise": True}


class DatasetSpecError(DataError, ValueError):
    """A ``datasets.yaml`` file or entry is unreadable, lacks a key or has an invalid value (the message names the
    file, the entry and the key); a :class:`DataError` like every other bad input."""


@dataclass(frozen=True)
class DatasetSpec:
    """One validated dataset entry.  See ``datasets.yaml`` for the meaning of each field."""

    name: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    file_ending: str
    description: str = ""
    layout: str | None = None
    target_spacing: tuple[float, float, float] | None = None
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    roi_size: tuple[int, int, int] | None = None
    licence: str = ""
    source: str = ""
    task: str = "segmentation"
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)
    case_pattern: str | None = None
    channel_suffixes: dict[str, str] = field(default_factory=dict)
    citation: str | None = None
    origin: str = "<built-in>"
    defaulted: tuple[str, ...] = ()

    @property
    def num_channels(self) -> int:
        """Input channels (modalities)."""
        return len(self.channel_names)

    @property
    def label_values(self) -> tuple[int, ...]:
        """Every value allowed in a label file, sorted (background 0 included)."""
        return tuple(sorted(self.labels.values()))

    @property
    def out_channels(self) -> int:
        """Network outputs: one per region (sigmoid) when regions are defined, else one per label (softmax)."""
        return len(self.regions) if self.regions else len(self.labels)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of each output channel."""
        if self.regions:
            return tuple(self.regions)
        return tuple(sorted(self.labels, key=self.labels.__getitem__))

    @property
    def is_ct(self) -> bool:
        """True for CT-window normalisation."""
        return self.normalization["type"] == "ct"

    @property
    def uses_nonzero_mask(self) -> bool:
        """True for nonzero z-score normalisation: voxels that are exactly 0 in every channel lie outside the
        scan (skull-stripped MRI, BraTS) and are predicted background there, as nnU-Net does."""
        return self.normalization["type"] == "zscore" and bool(self.normalization.get("nonzero"))

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "entry": {...}}``: the entry as ``datasets.yaml`` would hold it (stored in checkpoints,
        so prediction needs no ``datasets.yaml``); :meth:`from_dict` reads it back."""
        entry: dict[str, Any] = {
            "description": self.description,
            "task": self.task,
            "channel_names": list(self.channel_names),
            "labels": dict(self.labels),
            "file_ending": self.file_ending,
            "layout": self.layout,
            "target_spacing": list(self.target_spacing) if self.target_spacing is not None else None,
            "normalization": dict(self.normalization),
            "roi_size": list(self.roi_size) if self.roi_size is not None else None,
            "licence": self.licence,
            "source": self.source,
            "regions": {k: list(v) for k, v in self.regions.items()},
            "case_pattern": self.case_pattern,
            "channel_suffixes": dict(self.channel_suffixes),
            "citation": self.citation,
        }
        kept = {k: v for k, v in entry.items() if v not in (None, "", {}, []) and k not in self.defaulted}
        return {"name": self.name, "entry": kept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "<checkpoint>") -> DatasetSpec:
        """Inverse of :meth:`to_dict`."""
        return parse_spec(data["name"], data["entry"], origin=origin)


def _fail(origin: str, name: str, key: str, problem: str) -> DatasetSpecError:
    return DatasetSpecError(origin, f"entry {name!r}: key {key!r}: {problem}")


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a YAML value can be arbitrarily large)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _triple(origin: str, name: str, key: str, value: Any, kind: type) -> tuple:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3 or not all(map(_number, value)):
        raise _fail(origin, name, key, f"expected 3 finite numbers (x, y, z), got {_show(value)}")
    if kind is int and any(float(v) != int(v) for v in value):
        raise _fail(origin, name, key, f"expected whole numbers, got {_show(value)}")
    out = tuple(kind(v) for v in value)
    if any(v <= 0 for v in out):
        raise _fail(origin, name, key, f"values must be positive, got {_show(value)}")
    return out


def _text(origin: str, name: str, entry: Mapping[str, Any], key: str) -> str | None:
    """An optional free-text key: a string (or a number written without quotes), else an error."""
    value = entry.get(key)
    if value is None or isinstance(value, str):
        return value
    if _number(value):
        return str(value)
    raise _fail(origin, name, key, f"expected text, got {type(value).__name__} {_show(value)}")


def _mapping(origin: str, name: str, entry: Mapping[str, Any], key: str) -> dict:
    value = entry.get(key) or {}
    if not isinstance(value, Mapping):
        raise _fail(origin, name, key, f"expected a mapping, got {type(value).__name__} {_show(value)}")
    return dict(value)


def parse_spec(name: str, entry: Mapping[str, Any], origin: str = "<built-in>") -> DatasetSpec:
    """Validate one YAML entry and build its :class:`DatasetSpec` (raises :class:`DatasetSpecError`)."""
    if not isinstance(entry, Mapping):
        raise DatasetSpecError(origin, f"entry {name!r} must be a mapping of keys, got {type(entry).__name__}")
    entry = dict(entry)
    for alias, key in ALIASES.items():
        if alias in entry:
            if key in entry:
                raise _fail(origin, name, alias, f"given together with {key!r}: keep one")
            entry[key] = entry.pop(alias)
    unknown = sorted(str(k) for k in set(entry) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise _fail(
            origin, name, unknown[0], f"unknown key (required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})"
        )
    for key in REQUIRED:
        if key not in entry or entry[key] in (None, ""):
            raise _fail(origin, name, key, f"missing (required keys: {', '.join(REQUIRED)})")
    defaulted = tuple(k for k in TRAINING_KEYS if entry.get(k) is None)

    texts = {key: _text(origin, name, entry, key) for key in ("description", "licence", "source", "citation")}
    texts["case_pattern"] = _text(origin, name, entry, "case_pattern")
    channels = entry["channel_names"]
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        raise _fail(origin, name, "channel_names", f"expected a non-empty list of names, got {_show(channels)}")
    if len(set(channels)) != len(channels):
        raise _fail(origin, name, "channel_names", f"duplicate channel names in {channels}")

    labels = entry["labels"]
    if not isinstance(labels, Mapping) or not labels:
        raise _fail(origin, name, "labels", "expected a mapping name -> integer value")
    for lname, value in labels.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(
                origin, name, "labels", f"value of {_show(lname)} must be a non-negative integer, got {_show(value)}"
            )
    if 0 not in labels.values():
        raise _fail(origin, name, "labels", "background must have value 0")
    if len(set(labels.values())) != len(labels):
        raise _fail(origin, name, "labels", f"two labels share a value: {dict(labels)}")

    regions: dict[str, tuple[int, ...]] = {}
    for rname, values in _mapping(origin, name, entry, "regions").items():
        if not isinstance(values, list) or not values:
            raise _fail(origin, name, "regions", f"region {_show(rname)} must list label values, got {_show(values)}")
        bad = [v for v in values if v not in labels.values() or v == 0]
        if bad:
            raise _fail(origin, name, "regions", f"region {rname!r} uses {bad}, which are not foreground label values")
        regions[str(rname)] = tuple(int(v) for v in values)

    if not isinstance(entry["file_ending"], str) or entry["file_ending"] not in FILE_ENDINGS:
        raise _fail(
            origin, name, "file_ending", f"{_show(entry['file_ending'])} is not one of {', '.join(FILE_ENDINGS)}"
        )
    layout = entry.get("layout")
    if layout is not None and (not isinstance(layout, str) or layout not in LAYOUTS):
        raise _fail(origin, name, "layout", f"{_show(layout)} is not one of {', '.join(LAYOUTS)}")

    norm = entry.get("normalization") or DEFAULT_NORMALIZATION
    if not isinstance(norm, Mapping) or not isinstance(norm.get("type"), str) or norm["type"] not in NORMALIZATIONS:
        raise _fail(origin, name, "normalization", f"needs type: ct, zscore or none, got {_show(norm)}")
    norm = dict(norm)
    if norm["type"] == "ct":
        for k in ("a_min", "a_max", "b_min", "b_max"):
            if k in norm and not _number(norm[k]) or k in ("a_min", "a_max") and k not in norm:
                raise _fail(origin, name, "normalization", f"CT window needs a finite number for {k!r}")
        if norm["a_min"] >= norm["a_max"]:
            raise _fail(origin, name, "normalization", f"a_min {norm['a_min']} must be below a_max {norm['a_max']}")
        norm.setdefault("b_min", 0.0)
        norm.setdefault("b_max", 1.0)
        norm.setdefault("clip", True)
    elif norm["type"] == "zscore":
        norm.setdefault("nonzero", True)
        norm.setdefault("channel_wise", True)
    task = entry.get("task") or ("biplanar" if layout == "biplanar" else "segmentation")
    task = task if isinstance(task, str) else _show(task)
    if task not in TASKS:
        raise _fail(origin, name, "task", f"{task!r} is not one of {', '.join(TASKS)}")
    if task == "biplanar" and layout is None:
        layout = "biplanar"
    if (task == "biplanar") != (layout == "biplanar"):
        raise _fail(origin, name, "layout", "biplanar datasets (task: biplanar) use the biplanar layout, and only they")

    suffixes = _mapping(origin, name, entry, "channel_suffixes")
    if layout == "brats":
        if not entry.get("case_pattern"):
            raise _fail(
                origin, name, "case_pattern", "the brats layout needs a case folder pattern, e.g. 'BraTS2021_*'"
            )
        missing = [c for c in [*channels, "label"] if c not in suffixes]
        if missing:
            raise _fail(origin, name, "channel_suffixes", f"the brats layout needs a file suffix for {missing}")

    spacing, roi = entry.get("target_spacing"), entry.get("roi_size")
    return DatasetSpec(
        name=name,
        description=texts["description"] or "",
        channel_names=tuple(channels),
        labels={str(k): int(v) for k, v in labels.items()},
        file_ending=entry["file_ending"],
        layout=layout,
        target_spacing=_triple(origin, name, "target_spacing", spacing, float) if spacing is not None else None,
        normalization=norm,
        roi_size=_triple(origin, name, "roi_size", roi, int) if roi is not None else None,
        licence=texts["licence"] or "",
        source=texts["source"] or "",
        task=task,
        regions=regions,
        case_pattern=texts["case_pattern"],
        channel_suffixes={str(k): str(v) for k, v in suffixes.items()},
        citation=texts["citation"],
        origin=origin,
        defaulted=defaulted,
    )


def safe_yaml(text: str, origin: str | os.PathLike, error: type[Exception] = DataError) -> Any:
    """``yaml.safe_load`` without what makes a small file huge or deep: aliases that expand beyond
    :data:`MAX_YAML_NODES` values (a few hundred bytes of nested ``&``/``*`` can mean billions) and nesting beyond
    Python's recursion limit are refused with ``error``. Ordinary aliases (``yaml.safe_dump`` writes them for
    shared values) are fine.

    Args:
        text: the YAML document.
        origin: the file, for messages.
        error: the exception class to raise (a :class:`DataError` subclass, or one taking a message).
    """

    def fail(problem: str) -> Exception:
        return error(origin, problem) if issubclass(error, DataError) else error(f"{origin}: {problem}")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None and _expanded_nodes(root) > MAX_YAML_NODES:
            raise fail(f"its aliases (&, *) expand to more than {MAX_YAML_NODES:,} values: write the values out")
        return yaml.safe_load(text)
    except RecursionError:
        raise fail("not valid YAML (nested too deeply)") from None


MAX_YAML_NODES = 1_000_000  # values a config may hold once its aliases are expanded


def _expanded_nodes(root: yaml.Node) -> int:
    """How many values the node graph holds with every alias written out (each shared node counted per use)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = MAX_YAML_NODES + 1  # a node reached again while being counted (a cycle) is too big
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        sizes[id(node)] = min(total, MAX_YAML_NODES + 1)
        return sizes[id(node)]

    return size(root)


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = safe_yaml(text, origin, DatasetSpecError)
    except yaml.YAMLError as exc:
        raise DatasetSpecError(origin, f"not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise DatasetSpecError(origin, "expected a mapping of dataset names to entries")
    return dict(data)


def builtin_specs_text() -> str:
    """The packaged ``datasets.yaml``."""
    return resources.files("medswin.data").joinpath("datasets.yaml").read_text()


def load_dataset_specs(extra_files: Iterable[str | Path] = ()) -> dict[str, DatasetSpec]:
    """The built-in specs plus those in ``extra_files`` (later files override earlier entries)."""
    specs = {name: parse_spec(name, e) for name, e in _read_yaml(builtin_specs_text(), "<built-in>").items()}
    for path in extra_files:
        path = Path(path)
        if not path.is_file():
            raise DatasetSpecError(path, "dataset file not found")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetSpecError(path, "not UTF-8 text (a binary file?)") from None
        except OSError as exc:
            raise DatasetSpecError(path, f"cannot read ({exc.strerror or exc})") from None
        for name, entry in _read_yaml(text, str(path)).items():
            if name in specs:
                log.info("%s: entry %r overrides the built-in one", path, name)
            specs[name] = parse_spec(str(name), entry, str(path))
    return specs


def get_dataset_spec(name: str, extra_files: Iterable[str | Path] = ()) -> DatasetSpec:
    """One spec by name; an unknown name lists the available ones."""
    specs = load_dataset_specs(extra_files)
    if name not in specs:
        raise DatasetSpecError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(specs))} (add yours with --datasets FILE)"
        )
    return specs[name]
