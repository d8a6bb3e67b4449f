"""Biplanar (Swin-X2S) datasets made from CT segmentation datasets.

``prepare_biplanar(source, out, spec)`` reads every case of a CT dataset folder (Decathlon, nnU-Net,
BTCV or flat layout), makes its coronal and sagittal DRRs and the label on the view-aligned 3D grid
(:mod:`medswin.data.drr`), and writes::

    out/imagesTr/{case}_coronal.nii.gz, {case}_sagittal.nii.gz   2D views (H, W) in [0, 1]
    out/labelsTr/{case}.nii.gz                                   3D labels (H, H, W)
    out/png/{case}_coronal.png, ...                              the views as pictures
    out/meta/{case}_drr.json                                     geometry (pixel spacing, label affine)
    out/dataset.json                                             "training" (and "test") entries
    out/datasets.yaml                                            the dataset entry for training

so that ``medswin train --dataset NAME-x2s --datasets out/datasets.yaml --data out --model
swin_x2s_small`` trains on it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from .atomic import TEMP_PREFIX, remove_stale_temporaries, write_text_atomic
from .datalist import build_datalist
from .drr import make_drrs, write_drrs
from .errors import DataError
from .io import check_image, check_label, check_pair, load_volume
from .outputs import check_outputs
from .spec import DatasetSpec

log = logging.getLogger(__name__)


def biplanar_spec_entry(spec: DatasetSpec, height: int, width: int) -> dict:
    """The ``datasets.yaml`` entry of the biplanar version of ``spec``."""
    return {
        "description": f"biplanar DRRs (coronal + sagittal) of {spec.name}, labels on the view-aligned grid",
        "task": "biplanar",
        "channel_names": ["DRR"],
        "labels": dict(spec.labels),
        "file_ending": ".nii.gz",
        "layout": "biplanar",
        "target_spacing": [1.0, 1.0, 1.0],
        "normalization": {"type": "none"},
        "roi_size": [height, height, width],
        "licence": spec.licence,
        "source": f"medswin data prepare-x2s from {spec.name} ({spec.source})",
    }


def prepare_biplanar(
    source: str | Path,
    out: str | Path,
    spec: DatasetSpec,
    height: int = 128,
    width: int = 160,
    perspective: bool = False,
    name: str | None = None,
) -> Path:
    """Convert the CT dataset at ``source`` into a biplanar dataset at ``out`` (see the module docstring).

    Every case is checked (one-channel CT with finite voxels, labels within the spec, label and CT on one
    grid) and converted into a hidden staging folder next to ``out``; only when all cases are done do the
    files move into ``out`` (``dataset.json`` last), so a bad case leaves nothing at ``out`` and a killed
    run is finished by running the same command again.
    """
    if spec.num_channels != 1:
        raise DataError(source, f"DRRs need single-channel CT; dataset {spec.name!r} has {spec.num_channels} channels")
    if height < 1 or width < 1:
        raise ValueError(f"the DRR size must be positive pixels (H W), got {height} x {width}")
    out = Path(out)
    check_outputs([out], [], [source])
    sections = build_datalist(source, spec)
    meta: dict = {
        "name": name or f"{spec.name}-x2s",
        "source": str(source),
        "height": height,
        "width": width,
        "perspective": perspective,
    }
    staging = out.parent / f"{TEMP_PREFIX}{os.getpid()}-{out.name}"
    remove_stale_temporaries(out)
    try:
        for section, items in sections.items():
            target = "test" if section == "test" else "training"
            for item in tqdm(items, desc=f"DRRs ({section})", leave=False):
                if item.get("label") is None or not Path(item["label"]).exists():
                    log.warning("%s: no label, skipped", item["case"])
                    continue
                meta.setdefault(target, []).append(
                    _convert_case(item, staging, spec, target, height, width, perspective)
                )
        if not meta.get("training"):
            raise DataError(source, "no labelled cases to convert")
        meta["numTraining"] = len(meta["training"])
        entry = {meta["name"]: biplanar_spec_entry(spec, height, width)}
        write_text_atomic(staging / "datasets.yaml", yaml.safe_dump(entry, sort_keys=False))
        write_text_atomic(staging / "dataset.json", json.dumps(meta, indent=2))
        _merge(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %d biplanar case(s) to %s", meta["numTraining"], out)
    return out


def _convert_case(
    item: dict, staging: Path, spec: DatasetSpec, target: str, height: int, width: int, perspective: bool
) -> dict:
    """One CT case -> its two views, label and geometry under ``staging``; returns its ``dataset.json`` entry."""
    sub = "Ts" if target == "test" else "Tr"
    ct = load_volume(item["image"][0])
    check_image(ct, expected_channels=1, channel_names=("CT",))
    label = load_volume(item["label"])
    check_label(label, spec.label_values, spec.name)
    check_pair(ct, label)
    case = item["case"]
    written = write_drrs(make_drrs(ct, label, height, width, perspective), staging / ".case", stem=f"{case}_")
    moves = {
        "coronal_nii": f"images{sub}/{case}_coronal.nii.gz",
        "sagittal_nii": f"images{sub}/{case}_sagittal.nii.gz",
        "label": f"labels{sub}/{case}.nii.gz",
        "coronal_png": f"png/{case}_coronal.png",
        "sagittal_png": f"png/{case}_sagittal.png",
        "meta": f"meta/{case}_drr.json",
    }
    for key, rel in moves.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        Path(written[key]).replace(staging / rel)
    shutil.rmtree(staging / ".case", ignore_errors=True)
    return {
        "case": case,
        "image_coronal": f"./images{sub}/{case}_coronal.nii.gz",
        "image_sagittal": f"./images{sub}/{case}_sagittal.nii.gz",
        "label": f"./labels{sub}/{case}.nii.gz",
    }


def _merge(staging: Path, out: Path) -> None:
    """Move every file of ``staging`` to the same place under ``out`` (each move atomic), ``dataset.json`` last."""
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: p.name == "dataset.json")
    for f in files:
        dest = out / f.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)


def label_affine_for(view_path: str | Path) -> np.ndarray | None:
    """The label-grid affine recorded next to a view (``meta/{case}_drr.json`` or ``drr.json``), if any."""
    view_path = Path(view_path)
    case = view_path.name.split("_coronal")[0].split("_sagittal")[0]
    for candidate in (
        view_path.parent.parent / "meta" / f"{case}_drr.json",
        view_path.parent / f"{case}_drr.json",
        view_path.parent / "drr.json",
    ):
        if candidate.is_file():
            return np.asarray(json.loads(candidate.read_text())["label_affine"], dtype=np.float64)
    return None
