"""Segmentation metrics: Dice, HD95, normalised surface Dice (NSD) and volumes, per class or BraTS region.

Definitions (masks ``(X, Y, Z)``, ``spacing`` in mm per axis; they agree with MONAI 1.6's
``compute_dice``, ``compute_hausdorff_distance(percentile=95)`` and ``compute_surface_dice`` whenever
both masks are non-empty):

* Dice: ``2 |P & G| / (|P| + |G|)``.
* Surfaces: the boundary voxels of a mask, i.e. the mask minus its binary erosion (6-connected
  structuring element, voxels outside the image count as background) -- MONAI's ``get_mask_edges``.
* Surface distances: Euclidean distance in mm (anisotropic ``spacing``) from every boundary voxel of
  one mask to the nearest boundary voxel of the other, in both directions.
* HD95: MONAI's symmetric 95th-percentile Hausdorff distance, ``max(p95(d(P->G)), p95(d(G->P)))``
  with linear interpolation between order statistics.  Note: this is the larger of the two
  *directed* percentiles, which is what MONAI computes; it is not the percentile of the pooled
  distances of both directions.  The percentile is taken as MONAI takes it (``torch.quantile`` on
  single-precision distances), so the values are MONAI's single-precision values (written as the
  shortest decimal of that float32: 0.8, not 0.800000011920929); the single-precision rounding
  (about 1e-6 mm) is far below any voxel size.
* NSD at tolerance ``tau`` mm: ``(#{d(P->G) <= tau} + #{d(G->P) <= tau}) / (|dP| + |dG|)``, boundary
  sizes counted in voxels (MONAI's ``compute_surface_dice`` with ``use_subvoxels=False``).  Distances
  are compared with ``tau`` in single precision, as MONAI does, so that boundary voxels lying exactly
  at the tolerance count as within it whatever the floating-point rounding of the distance.
* Volumes in millilitres: ``voxels * prod(spacing) / 1000``; ``volume_diff_ml`` = prediction - truth.
* Centroid L-error: Euclidean distance in mm between the centroids (voxel-centre means, times the
  spacing) of prediction and truth; ``identified`` is 1 when it is at most 20 mm (Swin-X2S's ID
  rate is the mean of ``identified`` over the structures present in the truth).  Undefined (NaN)
  when either mask is empty, except ``identified`` = 0 for a missed structure.

Empty-mask conventions (where MONAI returns NaN or inf):

* both prediction and truth empty: Dice 1, HD95 0, NSD 1 (the BraTS convention);
* exactly one of them empty (non-empty prediction with empty truth, or empty prediction with
  non-empty truth): Dice 0, NSD 0, and HD95 = the image diagonal in mm,
  ``sqrt(sum((shape_i * spacing_i) ** 2))``, or 373.13 mm with ``brats=True`` (the value the BraTS
  challenge uses).

Classes and regions: :func:`case_metrics` scores one binary mask per foreground label value
(``labels == value``, background 0 excluded) or, for BraTS-style regions, one mask per region
(``isin(labels, region_values)``; e.g. BraTS 2021 ``ET = (4,)``, ``TC = (1, 4)``, ``WT = (1, 2, 4)``).

Files: :func:`match_cases` pairs prediction and ground-truth files by name, :func:`evaluate_pairs`
loads them (:func:`medswin.data.io.load_volume`), checks that they share a grid and returns one row
per case and class.  Bad inputs raise :class:`medswin.data.errors.DataError` naming the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from ..data.errors import DataError
from ..data.formats import VOLUME_ENDINGS, strip_ending, volume_ending

if TYPE_CHECKING:
    from ..data.spec import DatasetSpec

log = logging.getLogger(__name__)

__all__ = [
    "BRATS_EMPTY_HD95",
    "METRIC_KEYS",
    "binary_metrics",
    "centroid_distance",
    "case_metrics",
    "evaluate_pairs",
    "match_cases",
]

BRATS_EMPTY_HD95 = 373.13  # mm: the BraTS challenge's HD95 when exactly one of prediction / truth is empty
METRIC_KEYS = (
    "dice",
    "hd95",
    "nsd",
    "volume_pred_ml",
    "volume_gt_ml",
    "volume_diff_ml",
    "centroid_error_mm",
    "identified",
)
ID_DISTANCE_MM = 20.0  # a structure is identified when its predicted centroid is within this of the truth's


# ---------------------------------------------------------------------------------------------
# binary masks
# ---------------------------------------------------------------------------------------------


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in spacing)
    except TypeError:
        raise ValueError(f"spacing must be a sequence of {ndim} numbers (mm per axis), got {spacing!r}") from None
    if len(values) != ndim:
        raise ValueError(f"spacing {values} has {len(values)} values for a {ndim}D mask")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be positive and finite, got {values}")
    return values


def _bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` (non-empty) grown by ``margin``, clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its 6-connected erosion (outside the array is background)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) pred-surface -> gt-surface and gt-surface -> pred-surface; both masks non-empty.

    Everything happens inside the bounding box of ``pred | gt`` (plus one voxel): every surface voxel
    lies in it, so the Euclidean distance transforms there are exact and much cheaper than on the
    whole volume.
    """
    box = _bounding_box(pred | gt)
    edges_pred, edges_gt = _surface(pred[box]), _surface(gt[box])
    to_gt = ndimage.distance_transform_edt(~edges_gt, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~edges_pred, sampling=spacing)
    return to_gt[edges_pred], to_pred[edges_gt]


def _p95(distances: np.ndarray) -> float:
    """95th percentile as MONAI computes it: ``torch.quantile`` (linear interpolation) in float32.

    The float32 result is returned as the shortest decimal that identifies it (0.8, not
    0.800000011920929), so that exact distances read exactly.
    """
    values = distances.astype(np.float32)
    if values.size > 2**24:  # torch.quantile's input limit; numpy beyond it
        result = np.float32(np.percentile(values, 95))
    else:
        import torch

        result = np.float32(torch.quantile(torch.from_numpy(values), 0.95).item())
    return float(str(result))


def binary_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    nsd_tolerance_mm: float = 1.0,
    brats: bool = False,
) -> dict[str, float]:
    """Dice, HD95 (mm), NSD and volumes (ml) of one binary prediction against its truth.

    ``pred`` and ``gt`` are boolean masks of the same shape ``(X, Y, Z)`` (any dimension works; other
    dtypes are read as ``!= 0``); ``spacing`` is the voxel size in mm per axis.  ``nsd_tolerance_mm``
    is the NSD's boundary tolerance.  ``brats=True`` uses the BraTS challenge's 373.13 mm for HD95
    when exactly one mask is empty (otherwise the image diagonal).  See the module docstring for the
    exact definitions and the empty-mask conventions.

    Returns ``{"dice", "hd95", "nsd", "volume_pred_ml", "volume_gt_ml", "volume_diff_ml"}`` as floats.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    pred = pred if pred.dtype == bool else pred != 0
    gt = gt if gt.dtype == bool else gt != 0
    spacing = _check_spacing(spacing, pred.ndim)
    tolerance = float(nsd_tolerance_mm)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"nsd_tolerance_mm must be a finite number >= 0, got {nsd_tolerance_mm!r}")

    voxel_mm3 = float(np.prod(spacing))
    n_pred, n_gt = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    volumes = {
        "volume_pred_ml": n_pred * voxel_mm3 / 1000.0,
        "volume_gt_ml": n_gt * voxel_mm3 / 1000.0,
        "volume_diff_ml": (n_pred - n_gt) * voxel_mm3 / 1000.0,
    }
    if n_pred == 0 and n_gt == 0:
        return {"dice": 1.0, "hd95": 0.0, "nsd": 1.0, **volumes, "centroid_error_mm": math.nan, "identified": math.nan}
    if n_pred == 0 or n_gt == 0:
        if brats:
            hd95 = BRATS_EMPTY_HD95
        else:
            hd95 = float(math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))
        missed = 0.0 if n_gt else math.nan  # a false positive where nothing exists is not an identification
        return {"dice": 0.0, "hd95": hd95, "nsd": 0.0, **volumes, "centroid_error_mm": math.nan, "identified": missed}

    overlap = int(np.count_nonzero(pred & gt))
    dice = 2.0 * overlap / (n_pred + n_gt)
    d_pred_gt, d_gt_pred = _surface_distances(pred, gt, spacing)
    hd95 = max(_p95(d_pred_gt), _p95(d_gt_pred))
    tau = np.float32(tolerance)
    within = int(np.count_nonzero(d_pred_gt.astype(np.float32) <= tau))
    within += int(np.count_nonzero(d_gt_pred.astype(np.float32) <= tau))
    nsd = within / (d_pred_gt.size + d_gt_pred.size)
    error = centroid_distance(pred, gt, spacing)
    return {
        "dice": float(dice),
        "hd95": hd95,
        "nsd": float(nsd),
        **volumes,
        "centroid_error_mm": error,
        "identified": float(error <= ID_DISTANCE_MM),
    }


def centroid_distance(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Distance in mm between the centroids of two non-empty boolean masks ``(X, Y, Z)``."""
    cp = np.argwhere(pred).mean(0) * np.asarray(spacing, dtype=np.float64)
    cg = np.argwhere(gt).mean(0) * np.asarray(spacing, dtype=np.float64)
    return float(np.linalg.norm(cp - cg))


# ---------------------------------------------------------------------------------------------
# label maps
# ---------------------------------------------------------------------------------------------


def case_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    spacing: Sequence[float],
    classes: Mapping[str, int] | None = None,
    regions: Mapping[str, Sequence[int]] | None = None,
    nsd_tolerance_mm: float = 1.0,
    brats: bool = False,
) -> dict[str, dict[str, float]]:
    """Metrics of one case, per class or per region: ``{name: binary_metrics(...)}``.

    ``pred_labels`` and ``gt_labels`` are integer label maps ``(X, Y, Z)`` holding the dataset's
    label values (BraTS 2021: 0/1/2/4, BraTS 2023: 0/1/2/3).  With ``regions`` (name -> label values,
    e.g. ``{"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)}``) each region's mask is
    ``isin(labels, values)``; otherwise each class of ``classes`` (name -> value) is scored as
    ``labels == value``, background (value 0) excluded.  Without either, every non-zero value found
    in either map is a class named by its value.  Why regions: BraTS is ranked on the nested tumour
    regions, not on the raw labels.
    """
    pred_labels = np.asarray(pred_labels)
    gt_labels = np.asarray(gt_labels)
    if pred_labels.shape != gt_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} differs from ground-truth shape {gt_labels.shape}")
    kwargs: dict[str, Any] = {"spacing": spacing, "nsd_tolerance_mm": nsd_tolerance_mm, "brats": brats}
    if regions:
        out = {}
        for name, values in regions.items():
            values = [int(v) for v in values]
            out[str(name)] = binary_metrics(np.isin(pred_labels, values), np.isin(gt_labels, values), **kwargs)
        return out
    if classes is None:
        found = np.union1d(np.unique(pred_labels), np.unique(gt_labels))
        classes = {str(int(v)): int(v) for v in found if v != 0}
    return {
        str(name): binary_metrics(pred_labels == int(value), gt_labels == int(value), **kwargs)
        for name, value in classes.items()
        if int(value) != 0
    }


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def _case_id(name: str) -> str | None:
    return strip_ending(name) if volume_ending(name) in VOLUME_ENDINGS else None


def _list_cases(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(folder, f"{what} folder not found" if not folder.exists() else f"{what} path is not a folder")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():  # hidden and temp files (.tmp-*), sub-folders
            continue
        case = _case_id(path.name)
        if case is None:
            log.debug("%s: not a volume file (%s), skipped", path, ", ".join(VOLUME_ENDINGS))
            continue
        if case in cases:
            raise DataError(folder, f"case {case!r} has two files, {cases[case].name} and {path.name}; keep one")
        cases[case] = path
    return cases


_PAIRING_SUFFIXES = ("_labels", "_label", "-seg", "_seg")  # Swin-X2S predictions; BraTS label files
_BTCV_NAME = re.compile(r"(?:img|label)(\d+)")


def pairing_key(case: str) -> str:
    """The key a prediction and its ground truth share when their names differ by layout convention:
    ``img0061`` / ``label0061`` (BTCV) -> ``0061``; ``{case}_labels`` (Swin-X2S predictions) and
    ``{case}-seg`` (BraTS label files) -> ``{case}``; any other name is its own key.

    Args:
        case: a file name without its ending, or a case id.
    """
    for suffix in _PAIRING_SUFFIXES:
        if case.endswith(suffix) and len(case) > len(suffix):
            case = case[: -len(suffix)]
            break
    match = _BTCV_NAME.fullmatch(case)
    return match.group(1) if match else case


def _ground_truth_cases(gt_dir: Path) -> dict[str, Path]:
    """``{case: label file}`` of a folder of label files, or of a dataset folder in any layout the data layer
    reads (its cases with a label file, every section)."""
    direct = _list_cases(gt_dir, "ground-truth")  # raises for a missing folder, naming it
    if direct:
        return direct
    from ..data.datalist import build_datalist

    try:
        sections = build_datalist(gt_dir)
    except DataError:
        return direct  # neither label files nor a dataset: "no ground-truth files" below
    return {
        str(item["case"]): Path(item["label"])
        for items in sections.values()
        for item in items
        if item.get("label") and Path(item["label"]).is_file()
    }


def match_cases(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """Pair predictions with ground truths: ``[(case, pred_path, gt_path), ...]`` sorted by case.

    ``gt_dir`` is a folder of label files or a dataset folder (BTCV, nnU-Net, BraTS, Decathlon, flat,
    biplanar: the cases the data layer finds there, with their label files).  A prediction pairs with the
    ground-truth case of the same id -- the file name without ``.nii.gz`` / ``.nii`` / ``.nrrd`` / ``.mha`` --
    or, failing that, of the same :func:`pairing_key` when exactly one prediction has it (``img0061`` with
    ``label0061``, ``{case}_labels`` with ``{case}``).  nnU-Net's ``_0000`` channel suffix belongs to images,
    never to label files.  Hidden files and other file types are skipped.  A ground-truth case without a
    prediction raises :class:`DataError` naming the missing file(s); predictions without a ground truth are
    ignored with a warning.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    gts = _ground_truth_cases(gt_dir)
    preds = _list_cases(pred_dir, "prediction")
    by_key: dict[str, list[str]] = {}
    for case in preds:
        by_key.setdefault(pairing_key(case), []).append(case)
    for case in gts:  # a prediction named otherwise answers to its ground truth's id when its key is unique
        names = by_key.get(pairing_key(case), [])
        if case not in preds and len(names) == 1 and names[0] in preds and names[0] not in gts:
            preds[case] = preds.pop(names[0])
    if not gts:
        raise DataError(gt_dir, f"no ground-truth files ({', '.join(VOLUME_ENDINGS)}) in this folder")
    missing = [case for case in gts if case not in preds]
    if missing:
        expected = [pred_dir / f"{case}{gts[case].name[len(case) :]}" for case in missing]
        hints = [
            f"found {case}_0000* instead of {p.name} (an image-style name): rename it"
            for case, p in zip(missing, expected)
            if any(c.startswith(f"{case}_0000") for c in preds)
        ]
        names = ", ".join(str(p) for p in expected[:10])
        if len(expected) > 10:
            names += f" and {len(expected) - 10} more"
        problem = f"no prediction for {len(missing)} of {len(gts)} ground-truth case(s); missing: {names}"
        if hints:
            problem += "; " + "; ".join(hints[:3])
        raise DataError(expected[0] if len(expected) == 1 else pred_dir, problem)
    extra = sorted(set(preds) - set(gts))
    if extra:
        listing = ", ".join(preds[c].name for c in extra[:10]) + (" ..." if len(extra) > 10 else "")
        log.warning(
            "%s: %d prediction(s) without ground truth in %s ignored: %s", pred_dir, len(extra), gt_dir, listing
        )
    return [(case, preds[case], gts[case]) for case in sorted(gts)]


def _load_labels(path: str | os.PathLike, spec: DatasetSpec) -> Any:
    from ..data.io import check_label, load_volume

    volume = load_volume(path)
    check_label(volume, spec.label_values, spec.name)
    return volume


def evaluate_pairs(
    pairs: Sequence[tuple[str, str | os.PathLike, str | os.PathLike]],
    spec: DatasetSpec,
    nsd_tolerance_mm: float = 1.0,
    brats: bool | None = None,
    lesion_wise: str | None = None,
) -> list[dict[str, Any]]:
    """Score every ``(case, pred_path, gt_path)``: one row per case and class (or BraTS region).

    ``lesion_wise``: a BraTS challenge (``"BraTS-GLI"``, ... :data:`medswin.evaluation.lesionwise.CHALLENGES`):
    each region's row also gets the lesion-wise Dice / HD95 and lesion counts (``lesion_dice``,
    ``lesion_hd95``, ``lesion_tp``, ``lesion_fn``, ``lesion_fp``); needs a spec with regions.

    Each file is loaded with :func:`~medswin.data.io.load_volume` and must be a single-channel label
    map with ``spec``'s label values; prediction and truth must share the grid (shape and affine,
    :func:`~medswin.data.io.check_pair`); the truth's spacing gives the mm.  Classes are
    ``spec.labels`` without background, or ``spec.regions`` when the spec defines them.
    ``brats=None`` means ``bool(spec.regions)`` (HD95 373.13 mm for one-sided empty masks).

    Rows: ``{"case", "class", "dice", "hd95", "nsd", "volume_pred_ml", "volume_gt_ml",
    "volume_diff_ml", "pred_path", "gt_path"}`` (the paths let :func:`~medswin.evaluation.report.write_report`
    draw overlays).  Raises :class:`DataError` for unreadable files, bad label values or grid mismatches.
    """
    from ..data.io import check_pair

    if brats is None:
        brats = bool(spec.regions)
    if lesion_wise and not spec.regions:
        raise ValueError(f"lesion-wise metrics score BraTS regions; dataset {spec.name!r} defines none")
    classes = {name: value for name, value in spec.labels.items() if value != 0}
    rows: list[dict[str, Any]] = []
    for index, (case, pred_path, gt_path) in enumerate(pairs, 1):
        gt = _load_labels(gt_path, spec)
        pred = _load_labels(pred_path, spec)
        try:
            check_pair(gt, pred)
        except DataError:
            if pred.spatial_shape != gt.spatial_shape:
                detail = f"shape {pred.spatial_shape}, ground truth {gt.spatial_shape}"
            else:
                detail = f"affine differs by up to {float(np.max(np.abs(pred.affine - gt.affine))):.4g} mm"
            problem = f"prediction is not on the grid of its ground truth {gt_path}: {detail}"
            raise DataError(pred_path, problem) from None
        scores = case_metrics(
            pred.array[0],
            gt.array[0],
            gt.spacing,
            classes=classes,
            regions=spec.regions or None,
            nsd_tolerance_mm=nsd_tolerance_mm,
            brats=brats,
        )
        lesions = {}
        if lesion_wise:
            from .lesionwise import lesion_wise_case

            lesions = lesion_wise_case(pred.array[0], gt.array[0], gt.spacing, spec.regions, lesion_wise)
        for name, values in scores.items():
            row = {"case": str(case), "class": name, **values, "pred_path": str(pred_path), "gt_path": str(gt_path)}
            if name in lesions:
                row.update({k: v for k, v in lesions[name].items() if k != "lesions"})
            rows.append(row)
        log.info(
            "[%d/%d] %s: %s",
            index,
            len(pairs),
            case,
            ", ".join(f"{name} Dice {values['dice']:.4f}" for name, values in scores.items()),
        )
    return rows
