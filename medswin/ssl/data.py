"""Unlabeled volumes for pretraining: find them in any folder or datalist, and the MONAI crop pipeline.

:func:`find_volumes` accepts

* a datalist JSON: a list of entries (``{"image": path or [paths]}`` or plain paths) or a
  Decathlon-style dict whose ``training`` (and ``validation``) entries are used; relative paths are
  relative to the JSON file;
* a dataset folder in one of the layouts of :mod:`medswin.data.datalist` (its training images; the
  labels are not read);
* any other folder, searched recursively: every NIfTI/NRRD/MHA file is a case (nnU-Net channel
  files ``case_0000``, ``case_0001`` are grouped), every folder holding one DICOM series is a case,
  and folders whose name starts with ``label`` are skipped;
* a single volume file or DICOM series folder.

:func:`pretrain_transforms` loads (the data layer's checked reader,
:class:`~medswin.data.loading.LoadVolumed`: nibabel for NIfTI, SimpleITK for the rest), orients to RAS, optionally resamples, normalises (the dataset spec's normalisation when one
is given, else the Swin UNETR CT window [-1000, 1000] -> [0, 1] with ``ct=True``, else z-score over
the nonzero voxels per channel), crops to the foreground, pads to the roi and draws random crops.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    NormalizeIntensityd,
    Orientationd,
    RandSpatialCropSamplesd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from ..data.datalist import build_datalist, detect_layout, read_json, to_monai
from ..data.errors import DataError
from ..data.formats import DICOM_ENDINGS, VOLUME_ENDINGS, is_volume_file
from ..data.inputs import case_name
from ..data.io import list_dicom_series
from ..data.loading import LoadVolumed
from ..data.spec import DatasetSpec
from ..data.transforms import CheckResampledSized, intensity_transform

CT_WINDOW = {"a_min": -1000.0, "a_max": 1000.0, "b_min": 0.0, "b_max": 1.0, "clip": True}


def _case(name: str, paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """A MONAI case dict: one path as a string, several (channels) as a list."""
    files = [str(p) for p in paths]
    return {"case": name, "image": files[0] if len(files) == 1 else files}


def _datalist_cases(path: Path) -> dict[str, list[dict[str, Any]]]:
    data = read_json(path, "datalist")
    if not isinstance(data, (list, dict)):
        raise DataError(
            path, f"a datalist is a list of entries or a dict with a 'training' list, not {type(data).__name__}"
        )
    sections = (
        {"training": data} if isinstance(data, list) else {k: data.get(k) or [] for k in ("training", "validation")}
    )
    if not isinstance(sections["training"], list):
        raise DataError(path, "expected a list of entries, or a dict with a 'training' list")
    out: dict[str, list[dict[str, Any]]] = {}
    for section, entries in sections.items():
        cases = []
        for entry in entries:
            images = entry.get("image") if isinstance(entry, dict) else entry
            if images is None:
                raise DataError(path, f"entry without 'image' in {section!r}: {entry!r}")
            images = images if isinstance(images, list) else [images]
            paths = [Path(p) if Path(p).is_absolute() else (path.parent / p).resolve() for p in map(str, images)]
            missing = [p for p in paths if not p.exists()]
            if missing:
                raise DataError(missing[0], f"listed in {path.name} but not found")
            cases.append(_case(case_name(paths[0]), paths))
        out[section] = cases
    if not out["training"]:
        raise DataError(path, "the datalist has no training entries")
    return out


def _walk(root: Path) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.lower().startswith("label") and not d.startswith("."))
        here = Path(folder)
        volumes = sorted(f for f in files if is_volume_file(f))
        groups: dict[str, list[str]] = {}
        for f in volumes:
            m = re.match(r"(.+)_(\d{4})$", case_name(f))
            groups.setdefault(m.group(1) if m else case_name(f), []).append(str(here / f))
        rel = here.relative_to(root)
        for name, paths in sorted(groups.items()):
            cases.append(_case(str(rel / name) if str(rel) != "." else name, paths))
        others = [f for f in files if not f.lower().endswith(VOLUME_ENDINGS) and not f.startswith(".")]
        if others and any(f.lower().endswith(".dcm") or "." not in f for f in others):
            try:
                series = list_dicom_series(here)
            except DataError as exc:
                if exc.problem == "no DICOM files in this folder":
                    continue
                raise
            if len(series) > 1:
                raise DataError(here, f"contains {len(series)} DICOM series: put each series in its own folder")
            cases.append(_case(str(rel) if str(rel) != "." else here.name, [here]))
    return cases


def find_volumes(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """Unlabeled cases of ``path`` (see the module docstring): ``{"training": [...], "validation": [...]}``,
    each case ``{"case": name, "image": path or [channel paths]}``.  Raises :class:`DataError` when nothing is found."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "not found")
    if path.is_file() and path.name.endswith(".json"):
        return _datalist_cases(path)
    if path.is_file():
        if not path.name.lower().endswith(VOLUME_ENDINGS + DICOM_ENDINGS):
            raise DataError(
                path, f"not a volume (expected {', '.join(VOLUME_ENDINGS)}, a DICOM folder or a datalist .json)"
            )
        return {"training": [_case(case_name(path), [path])], "validation": []}
    try:
        detect_layout(path)
    except DataError:
        cases = _walk(path)
    else:
        sections = build_datalist(path)
        cases = [{"case": c["case"], "image": c["image"]} for c in to_monai(sections.get("training", []))]
    if not cases:
        raise DataError(path, "no volumes found (NIfTI/NRRD/MHA files or DICOM series folders, searched recursively)")
    return {"training": cases, "validation": []}


def _nonzero(x: Any) -> Any:
    return x != 0


def pretrain_transforms(
    roi_size: Sequence[int],
    num_samples: int = 2,
    spec: DatasetSpec | None = None,
    ct: bool = False,
    spacing: Sequence[float] | None = None,
) -> Compose:
    """Load -> RAS -> (resample) -> normalise -> foreground crop -> pad -> ``num_samples`` random crops of ``roi_size``.

    Normalisation: ``spec``'s when given, else the CT window [-1000, 1000] -> [0, 1] (``ct=True``),
    else per-channel z-score over nonzero voxels.  ``spacing`` defaults to the spec's target spacing
    (none: the volumes' own).  The foreground is the nonzero voxels after normalisation (air is 0
    after the CT window; outside a skull-stripped MRI is 0 after the nonzero z-score).
    """
    keys = ["image"]
    steps: list = [
        LoadVolumed(
            keys,
            label_key=None,
            channels=spec.num_channels if spec is not None else None,
            channel_names=spec.channel_names if spec is not None else (),
        ),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS", labels=None),
    ]
    target = spacing if spacing is not None else (spec.target_spacing if spec is not None else None)
    if target is not None:
        pixdim = tuple(float(s) for s in target)
        steps += [CheckResampledSized(keys, pixdim), Spacingd(keys, pixdim=pixdim, mode="bilinear")]
    if spec is not None:
        steps.append(intensity_transform(spec, keys))
    elif ct:
        steps.append(ScaleIntensityRanged(keys, **CT_WINDOW))
    else:
        steps.append(NormalizeIntensityd(keys, nonzero=True, channel_wise=True))
    roi = tuple(int(r) for r in roi_size)
    steps += [
        CropForegroundd(keys, source_key="image", select_fn=_nonzero, allow_smaller=True),
        SpatialPadd(keys, spatial_size=roi),
        RandSpatialCropSamplesd(keys, roi_size=roi, num_samples=num_samples, random_size=False),
        EnsureTyped(keys, track_meta=False),
    ]
    return Compose(steps)
