"""BraTS 2023+ lesion-wise Dice and HD95: the metrics the BraTS challenges rank by since 2023.

Per region (WT, TC, ET), following the challenge's published procedure (Saluja et al., BraTS 2023 lesion-wise
performance metrics; reimplemented from its description and parameters):

1. the ground truth's connected components (26-connectivity) are grouped into lesions: components that fall in
   one connected component of the ground truth dilated ``dilation`` times (18-connected structuring element)
   are one lesion, so nearby fragments of one tumour count once;
2. for each lesion, the predicted components (26-connectivity) that touch the lesion dilated the same way are
   its match; the lesion scores the Dice and HD95 between itself and the union of its match (a lesion without
   match: Dice 0, HD95 374 mm);
3. every predicted component that matches no lesion is a false positive: Dice 0, HD95 374 mm;
4. lesions of at most ``min_volume_mm3`` are left out (of the sum and the counts);
5. the case's score = (sum over the kept lesions) / (kept lesions + false positives); with neither, Dice 1 and
   HD95 0 (both empty).

HD95 is medswin's (the larger of the two directed 95th percentiles of the surface distances, as MONAI); the
official code uses DeepMind's surface-distance package, whose percentiles weigh each surface element by its
area, so HD95 values can differ by a fraction of a voxel; Dice and the lesion counts are the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .metrics import _p95, _surface_distances

# challenge -> (dilation iterations, lesion volume threshold in mm^3), as the official evaluation sets them
CHALLENGES: dict[str, tuple[int, float]] = {
    "BraTS-GLI": (3, 50.0),
    "BraTS-SSA": (3, 50.0),
    "BraTS-MEN": (1, 50.0),
    "BraTS-PED": (3, 50.0),
    "BraTS-MET": (1, 2.0),
}
# dataset entry -> its challenge, where lesion-wise scoring is the default (``medswin evaluate``)
DEFAULT_CHALLENGE = {"brats2023": "BraTS-GLI"}
MISS_HD95 = 374.0
LESION_KEYS = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fn", "lesion_fp")


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a binary mask: ``(labels, count)``."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    return labels, int(count)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``iterations`` dilations with the 18-connected 3x3x3 structuring element (none for 0)."""
    if iterations <= 0:
        return mask
    return ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(3, 2), iterations=iterations)


def _hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> float:
    """HD95 (mm) of two masks: 0 when both are empty, ``MISS_HD95`` when one is."""
    if not pred.any() and not gt.any():
        return 0.0
    if not pred.any() or not gt.any():
        return MISS_HD95
    to_gt, to_pred = _surface_distances(pred, gt, spacing)
    return max(_p95(to_gt), _p95(to_pred))


def lesion_wise_scores(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], dilation: int = 3, min_volume_mm3: float = 50.0
) -> dict[str, Any]:
    """Lesion-wise Dice / HD95 and lesion counts of one binary region (see the module docstring).

    Returns ``{"lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fn", "lesion_fp", "lesions": [{"volume_mm3",
    "dice", "hd95", "matched"} per ground-truth lesion, the left-out ones included]}``.

    Args:
        pred: the predicted mask ``(X, Y, Z)``.
        gt: the ground-truth mask, same shape.
        spacing: voxel size in mm.
        dilation: dilation iterations (grouping and matching).
        min_volume_mm3: lesions of at most this volume are left out.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"lesion-wise metrics need two 3D masks of one shape, got {pred.shape} and {gt.shape}")
    spacing = tuple(float(s) for s in spacing)
    voxel_mm3 = float(np.prod(spacing))
    pred_cc, n_pred = _components(pred)
    grouped, n_lesions = _components(_dilate(gt, dilation))
    grouped = grouped * gt  # every ground-truth voxel labelled by the dilated component it lies in
    matched: set[int] = set()
    lesions = []
    for k in range(1, n_lesions + 1):
        lesion = grouped == k
        if not lesion.any():
            continue
        hits = np.unique(pred_cc[_dilate(lesion, dilation)])
        hits = hits[hits != 0]
        matched.update(int(h) for h in hits)
        match = np.isin(pred_cc, hits)
        overlap = np.logical_and(lesion, match).sum()
        lesions.append(
            {
                "volume_mm3": float(lesion.sum() * voxel_mm3),
                "dice": float(2.0 * overlap / (lesion.sum() + match.sum())),
                "hd95": _hd95(match, lesion, spacing),
                "matched": bool(hits.size),
            }
        )
    false_positives = n_pred - len(matched)
    kept = [lesion for lesion in lesions if lesion["volume_mm3"] > min_volume_mm3]
    n = len(kept) + false_positives
    tp = sum(lesion["matched"] for lesion in kept)
    return {
        "lesion_dice": float(sum(lesion["dice"] for lesion in kept) / n) if n else 1.0,
        "lesion_hd95": float((sum(lesion["hd95"] for lesion in kept) + MISS_HD95 * false_positives) / n) if n else 0.0,
        "lesion_tp": int(tp),
        "lesion_fn": int(len(kept) - tp),
        "lesion_fp": int(false_positives),
        "lesions": lesions,
    }


def lesion_wise_case(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    spacing: Sequence[float],
    regions: Mapping[str, Sequence[int]],
    challenge: str = "BraTS-GLI",
) -> dict[str, dict[str, Any]]:
    """Lesion-wise scores of every region of one case: ``{region: lesion_wise_scores(...)}``.

    Args:
        pred_labels: the predicted label map ``(X, Y, Z)``.
        gt_labels: the ground-truth label map.
        spacing: voxel size in mm.
        regions: region name -> label values (e.g. BraTS 2023: ``{"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}``).
        challenge: a key of :data:`CHALLENGES` (its dilation and volume threshold).
    """
    if challenge not in CHALLENGES:
        raise ValueError(f"unknown BraTS challenge {challenge!r}; choose from {', '.join(CHALLENGES)}")
    dilation, min_volume = CHALLENGES[challenge]
    return {
        str(name): lesion_wise_scores(
            np.isin(pred_labels, list(values)), np.isin(gt_labels, list(values)), spacing, dilation, min_volume
        )
        for name, values in regions.items()
    }
