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
import shutil
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from .atomic import write_text_atomic
from .datalist import build_datalist
from .drr import make_drrs, write_drrs
from .errors import DataError
from .io import check_label, load_volume
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
    """Convert the CT dataset at ``source`` into a biplanar dataset at ``out`` (see the module docstring)."""
    if spec.num_channels != 1:
        raise DataError(source, f"DRRs need single-channel CT; dataset {spec.name!r} has {spec.num_channels} channels")
    sections = build_datalist(source, spec)
    out = Path(out)
    meta: dict = {
        "name": name or f"{spec.name}-x2s",
        "source": str(source),
        "height": height,
        "width": width,
        "perspective": perspective,
    }
    for section, items in sections.items():
        target = "test" if section == "test" else "training"
        sub = "Ts" if target == "test" else "Tr"
        for item in tqdm(items, desc=f"DRRs ({section})", leave=False):
            if item.get("label") is None or not Path(item["label"]).exists():
                log.warning("%s: no label, skipped", item["case"])
                continue
            ct = load_volume(item["image"][0])
            label = load_volume(item["label"])
            check_label(label, spec.label_values, spec.name)
            result = make_drrs(ct, label, height, width, perspective)
            tmp = out / ".tmp-case"
            written = write_drrs(result, tmp, stem=f"{item['case']}_")
            case = item["case"]
            moves = {
                "coronal_nii": out / f"images{sub}" / f"{case}_coronal.nii.gz",
                "sagittal_nii": out / f"images{sub}" / f"{case}_sagittal.nii.gz",
                "label": out / f"labels{sub}" / f"{case}.nii.gz",
                "coronal_png": out / "png" / f"{case}_coronal.png",
                "sagittal_png": out / "png" / f"{case}_sagittal.png",
                "meta": out / "meta" / f"{case}_drr.json",
            }
            for key, dest in moves.items():
                dest.parent.mkdir(parents=True, exist_ok=True)
                Path(written[key]).replace(dest)
            shutil.rmtree(tmp, ignore_errors=True)
            meta.setdefault(target, []).append(
                {
                    "case": case,
                    "image_coronal": f"./images{sub}/{case}_coronal.nii.gz",
                    "image_sagittal": f"./images{sub}/{case}_sagittal.nii.gz",
                    "label": f"./labels{sub}/{case}.nii.gz",
                }
            )
    if not meta.get("training"):
        raise DataError(source, "no labelled cases to convert")
    meta["numTraining"] = len(meta["training"])
    write_text_atomic(out / "dataset.json", json.dumps(meta, indent=2))
    entry = {meta["name"]: biplanar_spec_entry(spec, height, width)}
    write_text_atomic(out / "datasets.yaml", yaml.safe_dump(entry, sort_keys=False))
    log.info("wrote %d biplanar case(s) to %s", meta["numTraining"], out)
    return out


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
