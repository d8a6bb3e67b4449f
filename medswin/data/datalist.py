"""Datalists: find the cases of a dataset folder in any of the usual layouts, and split them into folds.

A datalist item is a MONAI-style dict ``{"case": id, "image": [path, ...], "label": path | None}``
with one image path per channel file (a single 4D file for Decathlon multi-channel images);
``LoadImaged`` stacks a list of paths as channels.  Supported layouts:

* ``decathlon``: ``dataset.json`` with ``training`` (and ``test``) lists of relative paths;
* ``nnunet``: ``imagesTr/{case}_{XXXX}{ending}`` per channel + ``labelsTr/{case}{ending}``
  (``imagesTs`` for test cases);
* ``brats``: one folder per case, ``{case}{suffix}{ending}`` per channel and label (2021 and 2023 naming);
* ``btcv``: ``img/img00NN`` + ``label/label00NN`` (under ``RawData/Training`` or not), or MONAI's
  ``dataset_0.json`` when present;
* ``flat``: ``images/`` + ``labels/`` (or ``imagesTr``/``labelsTr`` without a ``dataset.json``)
  matched by file name;
* ``biplanar``: ``dataset.json`` entries with ``image_coronal``, ``image_sagittal`` and ``label``
  (written by ``medswin data prepare-x2s`` for Swin-X2S).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DataError
from .formats import is_volume_file
from .formats import strip_ending as _strip_ending
from .spec import LAYOUTS, DatasetSpec

Item = dict[str, Any]


def _volumes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_volume_file(p.name))


def detect_layout(root: str | Path) -> str:
    """Guess the layout of ``root`` from its files (raises :class:`DataError` when nothing fits)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    dataset_json = root / "dataset.json"
    if dataset_json.is_file():
        meta = _read_json(dataset_json)
        training = meta.get("training") or []
        if isinstance(training, list) and training and isinstance(training[0], dict) and "image_coronal" in training[0]:
            return "biplanar"
        if "training" in meta:
            return "decathlon"
        if "channel_names" in meta or "file_ending" in meta:
            return "nnunet"
    if (
        (root / "dataset_0.json").is_file()
        or (root / "RawData").is_dir()
        or ((root / "img").is_dir() and (root / "label").is_dir())
    ):
        return "btcv"
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    if any(re.match(r"BraTS", d.name) for d in subdirs):
        return "brats"
    if (root / "images").is_dir() or (root / "imagesTr").is_dir():
        return "flat"
    raise DataError(
        root,
        "cannot tell the dataset layout (expected dataset.json, imagesTr/, images/, BraTS case folders or BTCV img/label)",
    )


def layout_problem(root: Path, layout: str, spec: DatasetSpec | None = None) -> str | None:
    """Why ``root`` is not in ``layout`` (what that layout needs and is missing), or ``None`` when it fits."""
    dataset_json = root / "dataset.json"
    if layout in ("decathlon", "biplanar"):
        if not dataset_json.is_file():
            return "no dataset.json"
        meta = _read_json(dataset_json)
        training = meta.get("training")
        if "training" in meta and not isinstance(training, list):  # a broken file, not another layout
            raise DataError(dataset_json, f"'training' must be a list of entries, got {type(training).__name__}")
        if not isinstance(training, list):
            return "dataset.json has no 'training' list"
        biplanar = bool(training) and isinstance(training[0], dict) and "image_coronal" in training[0]
        if biplanar != (layout == "biplanar"):
            return "its dataset.json lists " + ("X-ray view pairs" if biplanar else "volumes, not X-ray view pairs")
        return None
    if layout == "nnunet":
        return None if (root / "imagesTr").is_dir() else "no imagesTr/ folder"
    if layout == "flat":
        return (
            None if (root / "images").is_dir() or (root / "imagesTr").is_dir() else "no images/ (or imagesTr/) folder"
        )
    if layout == "btcv":
        found = (root / "dataset_0.json").is_file() or (root / "RawData" / "Training" / "img").is_dir()
        return (
            None if found or (root / "img").is_dir() else "no img/ folder (nor RawData/Training/img/, dataset_0.json)"
        )
    if layout == "brats":
        pattern = spec.case_pattern if spec is not None and spec.layout == "brats" and spec.case_pattern else "BraTS*"
        return None if any(d.is_dir() for d in root.glob(pattern)) else f"no case folders matching {pattern!r}"
    raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def read_json(path: str | Path, what: str = "JSON") -> Any:
    """The content of a JSON file; an unreadable, binary or malformed file is one :class:`DataError` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(path, f"cannot read the {what}: not UTF-8 text (a binary file?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read the {what} ({' '.join(str(exc).split())[:160]})") from None


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object")
    return data


def _resolve(root: Path, rel: str) -> Path:
    path = Path(rel) if Path(rel).is_absolute() else root / rel
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop: the reader names it when the file is read
        return path.absolute()


def _section(meta: dict[str, Any], section: str, source: Path, keys: tuple[str, ...] = ("image",)) -> list[dict]:
    """The entries of one section of a JSON datalist, checked: a list of ``{key: path, ...}`` (plain path strings
    stand for ``{"image": path}``); a path is a string or, for ``image``, a list of strings (one per channel)."""
    entries = meta.get(section) or []
    if not isinstance(entries, list):
        raise DataError(source, f"{section!r} must be a list of entries, got {type(entries).__name__}")
    out = []
    for entry in entries:
        if isinstance(entry, str) and keys == ("image",):
            entry = {"image": entry}
        if not isinstance(entry, dict):
            raise DataError(source, f"an entry of {section!r} must be a mapping of paths, got {entry!r}")
        missing = [k for k in keys if k not in entry]
        if missing:
            raise DataError(source, f"an entry of {section!r} has no {' / '.join(repr(k) for k in missing)}: {entry}")
        for key in (*keys, "label"):
            value = entry.get(key)
            paths = value if isinstance(value, list) and key == "image" else [value]
            if key in entry and value is not None and not (paths and all(isinstance(p, str) and p for p in paths)):
                raise DataError(source, f"{key!r} of an entry of {section!r} must be a file path, got {value!r}")
        out.append(entry)
    return out


def _decathlon(root: Path) -> dict[str, list[Item]]:
    meta = _read_json(root / "dataset.json")
    out: dict[str, list[Item]] = {}
    for section in ("training", "validation", "test"):
        items = []
        for entry in _section(meta, section, root / "dataset.json"):  # MSD test lists are plain paths
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            label = entry.get("label")
            case = _strip_ending(Path(images[0]).name)
            items.append(
                {
                    "case": case,
                    "image": [_resolve(root, p) for p in images],
                    "label": _resolve(root, label) if label else None,
                }
            )
        if items:
            out[section] = items
    return out


def _biplanar(root: Path) -> dict[str, list[Item]]:
    """Biplanar datasets (``medswin data prepare-x2s``): ``image_coronal``, ``image_sagittal``, ``label``."""
    meta = _read_json(root / "dataset.json")
    out: dict[str, list[Item]] = {}
    for section in ("training", "validation", "test"):
        items = []
        for entry in _section(meta, section, root / "dataset.json", ("image_coronal", "image_sagittal")):
            label = entry.get("label")
            items.append(
                {
                    "case": str(entry.get("case") or _strip_ending(Path(label or entry["image_coronal"]).name)),
                    "image_coronal": _resolve(root, entry["image_coronal"]),
                    "image_sagittal": _resolve(root, entry["image_sagittal"]),
                    "label": _resolve(root, label) if label else None,
                }
            )
        if items:
            out[section] = items
    return out


def _nnunet_folder(images: Path, labels: Path | None, ending: str, channels: int | None) -> list[Item]:
    groups: dict[str, dict[int, Path]] = {}
    for path in sorted(images.glob(f"*{ending}")):
        m = re.match(rf"(.+)_(\d{{4}}){re.escape(ending)}$", path.name)
        if not m:
            raise DataError(path, f"not an nnU-Net image name (expected CASE_XXXX{ending})")
        groups.setdefault(m.group(1), {})[int(m.group(2))] = path
    items = []
    for case, files in sorted(groups.items()):
        expected = channels if channels is not None else max(files) + 1
        missing = [c for c in range(expected) if c not in files]
        if missing:
            raise DataError(
                images, f"case {case!r} lacks channel file(s) {[f'{case}_{c:04d}{ending}' for c in missing]}"
            )
        label = labels / f"{case}{ending}" if labels is not None else None
        items.append({"case": case, "image": [files[c] for c in range(expected)], "label": label})
    return items


def _nnunet(root: Path, spec: DatasetSpec | None) -> dict[str, list[Item]]:
    meta = _read_json(root / "dataset.json") if (root / "dataset.json").is_file() else {}
    ending = meta.get("file_ending") or (spec.file_ending if spec else ".nii.gz")
    channels = len(meta["channel_names"]) if "channel_names" in meta else (spec.num_channels if spec else None)
    out = {"training": _nnunet_folder(root / "imagesTr", root / "labelsTr", ending, channels)}
    if (root / "imagesTs").is_dir():
        labels_ts = root / "labelsTs" if (root / "labelsTs").is_dir() else None
        out["test"] = _nnunet_folder(root / "imagesTs", labels_ts, ending, channels)
    return out


def _brats(root: Path, spec: DatasetSpec | None) -> dict[str, list[Item]]:
    if spec is None or spec.layout != "brats":
        # infer the naming from the first case folder
        first = next((d for d in sorted(root.iterdir()) if d.is_dir() and d.name.startswith("BraTS")), None)
        year = 2023 if first is not None and first.name.startswith("BraTS-") else 2021
        from .spec import get_dataset_spec

        spec = get_dataset_spec(f"brats{year}")
    ending = spec.file_ending
    items = []
    for case_dir in sorted(root.glob(spec.case_pattern or "*")):
        if not case_dir.is_dir():
            continue
        case = case_dir.name
        images = [case_dir / f"{case}{spec.channel_suffixes[c]}{ending}" for c in spec.channel_names]
        label = case_dir / f"{case}{spec.channel_suffixes['label']}{ending}"
        items.append({"case": case, "image": images, "label": label if label.exists() else None})
    if not items:
        raise DataError(root, f"no case folders matching {spec.case_pattern!r}")
    return {"training": items}


def _btcv(root: Path) -> dict[str, list[Item]]:
    if (root / "dataset_0.json").is_file():
        meta = _read_json(root / "dataset_0.json")
        out = {}
        for section in ("training", "validation", "test"):
            entries = _section(meta, section, root / "dataset_0.json")
            if entries:
                out[section] = [
                    {
                        "case": _strip_ending(Path(e["image"] if isinstance(e["image"], str) else e["image"][0]).name),
                        "image": [
                            _resolve(root, p) for p in (e["image"] if isinstance(e["image"], list) else [e["image"]])
                        ],
                        "label": _resolve(root, e["label"]) if e.get("label") else None,
                    }
                    for e in entries
                ]
        return out
    base = root / "RawData" / "Training" if (root / "RawData" / "Training").is_dir() else root
    if not (base / "img").is_dir():
        raise DataError(root, "BTCV layout expects img/ and label/ (optionally under RawData/Training)")
    items = []
    for img in _volumes(base / "img"):
        m = re.match(r"img(\d+)", img.name)
        if not m:
            continue
        label = base / "label" / img.name.replace("img", "label", 1)
        items.append({"case": f"img{m.group(1)}", "image": [img], "label": label})
    return {"training": items}


def _flat(root: Path) -> dict[str, list[Item]]:
    images = root / "images" if (root / "images").is_dir() else root / "imagesTr"
    labels = root / "labels" if (root / "labels").is_dir() else root / "labelsTr"
    items = []
    for img in _volumes(images):
        label = labels / img.name
        items.append({"case": _strip_ending(img.name), "image": [img], "label": label})
    return {"training": items}


def build_datalist(
    root: str | Path, spec: DatasetSpec | None = None, layout: str | None = None
) -> dict[str, list[Item]]:
    """Sections (``training``, and ``validation`` / ``test`` when the layout has them) of ``root``'s cases.

    Args:
        root: the dataset folder.
        spec: the dataset entry (file naming for BraTS and nnU-Net folders, and its declared layout).
        layout: the folder's layout; default ``spec.layout``, else what :func:`detect_layout` sees.

    A declared layout (argument or entry) wins over detection; a folder that does not fit it is a
    :class:`DataError` naming the declared layout, what is missing, and the layout the folder looks
    like.  Paths are absolute; files listed but missing are kept (``medswin data check`` reports them).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    declared = layout or (spec.layout if spec is not None else None)
    if declared is None:
        layout = detect_layout(root)
    else:
        problem = layout_problem(root, declared, spec)
        if problem is not None:
            try:
                detected = detect_layout(root)
                seen = "" if detected == declared else f"; it looks like the {detected} layout"
            except DataError:
                seen = "; no known layout fits it"
            where = "given" if layout else f"declared by dataset {spec.name!r}"  # type: ignore[union-attr]
            raise DataError(
                root, f"does not fit the {declared} layout {where} ({problem}){seen}: fix the layout or the folder"
            )
        layout = declared
    readers = {
        "decathlon": lambda: _decathlon(root),
        "nnunet": lambda: _nnunet(root, spec),
        "brats": lambda: _brats(root, spec),
        "btcv": lambda: _btcv(root),
        "flat": lambda: _flat(root),
        "biplanar": lambda: _biplanar(root),
    }
    out = readers[layout]()
    if not any(out.values()):
        raise DataError(root, f"no cases found ({layout} layout)")
    return out


def kfold_split(items: Sequence[Item], n_folds: int = 5, fold: int = 0, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """``(train, val)`` for ``fold`` of a seeded ``n_folds``-fold split (every case is validated once)."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in [0, {n_folds}), got {fold}")
    if len(items) < n_folds:
        raise ValueError(f"{len(items)} cases cannot be split into {n_folds} folds")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    val_idx = set(order[fold::n_folds])
    return [items[i] for i in range(len(items)) if i not in val_idx], [
        items[i] for i in range(len(items)) if i in val_idx
    ]


def to_monai(items: Sequence[Item]) -> list[dict[str, Any]]:
    """Items as MONAI dicts with string paths (``image`` a single path when there is one file)."""
    out = []
    for it in items:
        if "image_coronal" in it:  # biplanar: two single-view images
            d: dict[str, Any] = {
                "case": it["case"],
                "image_coronal": str(it["image_coronal"]),
                "image_sagittal": str(it["image_sagittal"]),
            }
            if it.get("label") is not None:
                d["label"] = str(it["label"])
            out.append(d)
            continue
        images = [str(p) for p in it["image"]]
        d = {"case": it["case"], "image": images[0] if len(images) == 1 else images}
        if it.get("label") is not None:
            d["label"] = str(it["label"])
        out.append(d)
    return out
