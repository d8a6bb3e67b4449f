"""A dataset's fingerprint: per case spacing, shape, orientation, foreground intensity statistics per channel
and class voxel fractions; the modality guessed from the intensities.  It is what ``medswin data plan``
(:mod:`medswin.training.plan`) derives a training configuration from, in the spirit of nnU-Net's dataset
fingerprint.

Every case is read through the data layer's checked reader (:func:`medswin.data.io.load_volume`), in parallel
worker processes; a case that cannot be read is listed with its one-line reason, not fatal.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .datalist import build_datalist, read_json
from .formats import volume_ending

log = logging.getLogger(__name__)

PERCENTILES = (0.5, 99.5)
# a CT in Hounsfield units has air near -1000 inside its field of view; MRI intensities are >= 0
CT_AIR_BELOW = -500.0


def axcodes(affine: np.ndarray) -> str:
    """The orientation code of an affine, e.g. ``"RAS"`` (nibabel's ``aff2axcodes``)."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))


def case_fingerprint(item: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of one datalist item (``{"case", "image": [paths], "label": path | None}``).

    Foreground = the labelled voxels (label > 0) when there is a label, else the nonzero voxels.  Returns
    ``{"case", "spacing", "shape", "orientation", "channels": [{"mean", "std", "p0.5", "p99.5", "min"}, ...],
    "class_fractions": {value: fraction}, "foreground_fraction"}``, or ``{"case", "error"}`` when a file
    cannot be read.

    Args:
        item: one datalist item.
    """
    from .errors import DataError
    from .io import load_volume

    try:
        volumes = [load_volume(p) for p in item["image"]]
        image = np.concatenate([v.array for v in volumes]).astype(np.float32, copy=False)
        label = load_volume(item["label"]).array[0] if item.get("label") else None
    except (DataError, ValueError, OSError) as exc:
        return {"case": item["case"], "error": str(exc).splitlines()[0]}
    first = volumes[0]
    if label is not None and label.shape != image.shape[1:]:
        return {"case": item["case"], "error": f"label shape {label.shape} differs from the image's {image.shape[1:]}"}
    foreground = label > 0 if label is not None else (image != 0).any(0)
    if not foreground.any():
        foreground = np.ones(image.shape[1:], bool)
    channels = []
    for channel in image:
        values = channel[foreground]
        low, high = np.percentile(values, PERCENTILES)
        channels.append(
            {
                "mean": float(values.mean()),
                "std": float(values.std()),
                "p0.5": float(low),
                "p99.5": float(high),
                "min": float(channel.min()),
            }
        )
    fractions = {}
    if label is not None:
        values, counts = np.unique(label.astype(np.int64), return_counts=True)
        fractions = {str(int(v)): float(c) / label.size for v, c in zip(values, counts)}
    return {
        "case": item["case"],
        "spacing": [round(s, 6) for s in first.spacing],
        "shape": list(first.spatial_shape),
        "orientation": axcodes(first.affine),
        "channels": channels,
        "class_fractions": fractions,
        "foreground_fraction": float(foreground.mean()),
    }


def guess_modality(cases: Sequence[dict[str, Any]]) -> str:
    """``"CT"`` when the first channel's minimum is below -500 (air in HU) in most cases, else ``"MRI"``.

    Args:
        cases: case fingerprints (failed ones are skipped).
    """
    minima = [c["channels"][0]["min"] for c in cases if "error" not in c]
    return "CT" if minima and np.mean([m < CT_AIR_BELOW for m in minima]) > 0.5 else "MRI"


def dataset_labels(root: Path, cases: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The label names: ``dataset.json``'s ``labels`` when there is one (``{name: value}`` or nnU-Net v1's
    ``{value: name}``), else ``label_N`` for every value found (0 = background).

    Args:
        root: the dataset folder.
        cases: case fingerprints (their class fractions name the values found).
    """
    meta_file = root / "dataset.json"
    if meta_file.is_file():
        labels = read_json(meta_file, "dataset.json").get("labels")
        if isinstance(labels, dict) and labels:
            if all(str(k).lstrip("-").isdigit() for k in labels):  # nnU-Net v1 / Decathlon: {"0": "background"}
                return {str(name): int(value) for value, name in labels.items()}
            if all(isinstance(v, int) for v in labels.values()):
                return {str(k): int(v) for k, v in labels.items()}
    found = sorted({int(v) for c in cases if "error" not in c for v in c["class_fractions"]} | {0})
    return {"background" if v == 0 else f"label_{v}": v for v in found}


def fingerprint_dataset(
    root: str | os.PathLike, layout: str | None = None, workers: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Fingerprint every training case of ``root`` (any layout the data layer reads) in ``workers`` processes.

    Returns ``{"root", "layout", "file_ending", "num_cases", "cases": [...], "failed": [{"case", "error"}],
    "modality", "labels", "channels"}``.

    Args:
        root: the dataset folder.
        layout: its layout (default: detected).
        workers: worker processes (default: up to 4, at most the CPUs); 0 or 1 reads in this process.
        progress: show a tqdm bar.
    """
    from tqdm import tqdm

    from .datalist import detect_layout

    root = Path(root)
    layout = layout or detect_layout(root)
    items = [i for i in build_datalist(root, layout=layout).get("training", []) if i.get("image")]
    workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
    bar = tqdm(total=len(items), desc="fingerprint", disable=not progress)
    results: list[dict[str, Any]] = []
    if workers <= 1 or len(items) < 2:
        for item in items:
            results.append(case_fingerprint(item))
            bar.update()
    else:
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for result in pool.map(case_fingerprint, items, chunksize=1):
                results.append(result)
                bar.update()
    bar.close()
    cases = [r for r in results if "error" not in r]
    failed = [r for r in results if "error" in r]
    for f in failed:
        log.warning("%s: %s (left out of the plan)", f["case"], f["error"])
    return {
        "root": str(root),
        "layout": layout,
        "file_ending": volume_ending(Path(items[0]["image"][0]).name) if items else None,
        "num_cases": len(items),
        "cases": cases,
        "failed": failed,
        "modality": guess_modality(cases),
        "labels": dataset_labels(root, cases),
        "channels": len(cases[0]["channels"]) if cases else 0,
    }
