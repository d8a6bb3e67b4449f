"""From network probabilities to label maps: argmax or region thresholds, and connected components.

* labels (softmax): ``argmax`` over classes;
* regions (sigmoid, BraTS-style nested regions): threshold each region at 0.5 and paint the regions
  from the largest to the smallest, each with the one label value it owns (the value in the region
  that no smaller nested region contains): BraTS 2021 WT -> 2, TC -> 1, ET -> 4.
* optional: keep the largest connected component of each class (MONAI
  ``KeepLargestConnectedComponent``), which removes scattered false positives of single organs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from monai.transforms import KeepLargestConnectedComponent

if TYPE_CHECKING:
    from ..data.spec import DatasetSpec


def region_label_values(regions: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """The label value each region owns (its values minus those of the regions nested inside it)."""
    owned = {}
    for name, values in regions.items():
        inner = set()
        for other, other_values in regions.items():
            if other != name and set(other_values) < set(values):
                inner |= set(other_values)
        own = sorted(set(values) - inner)
        if len(own) != 1:
            raise ValueError(f"region {name!r} {sorted(values)} does not own exactly one label value (owns {own})")
        owned[name] = own[0]
    return owned


def regions_to_labels(
    probs: torch.Tensor, regions: Mapping[str, Sequence[int]], threshold: float = 0.5
) -> torch.Tensor:
    """Region probabilities ``(R, X, Y, Z)`` -> label map ``(X, Y, Z)`` with the dataset's label values."""
    owned = region_label_values(regions)
    order = sorted(range(len(regions)), key=lambda i: -len(list(regions.values())[i]))
    names = list(regions)
    labels = torch.zeros(probs.shape[1:], dtype=torch.int64, device=probs.device)
    for i in order:  # largest region first, nested ones painted over it
        labels[probs[i] > threshold] = owned[names[i]]
    return labels


def probabilities_to_labels(probs: torch.Tensor, regions: Mapping[str, Sequence[int]] | None = None) -> torch.Tensor:
    """``(C, X, Y, Z)`` probabilities -> ``(X, Y, Z)`` labels (argmax, or region thresholds)."""
    if regions:
        return regions_to_labels(probs, regions)
    return probs.argmax(0)


def keep_largest_component(labels: torch.Tensor, values: Sequence[int] | None = None) -> torch.Tensor:
    """Keep, for each label value in ``values`` (default: every foreground value), its largest 3D component."""
    values = [int(v) for v in (values if values is not None else labels.unique().tolist()) if int(v) != 0]
    if not values:
        return labels
    out = KeepLargestConnectedComponent(applied_labels=values, independent=True, connectivity=3)(labels[None])
    return torch.as_tensor(out)[0].to(labels.dtype)


def to_label_values(probs: torch.Tensor, spec: DatasetSpec, largest_component: bool = False) -> torch.Tensor:
    """Probabilities ``(K, X, Y, Z)`` -> label map ``(X, Y, Z)`` holding the dataset's label values: region
    thresholds for region datasets, else the argmax mapped to the label values (class index k -> the k-th
    smallest value); optionally the largest component of each label."""
    if spec.regions:
        labels = probabilities_to_labels(probs, spec.regions)
    else:
        labels = probabilities_to_labels(probs)
        inverse = torch.tensor(sorted(spec.labels.values()), device=labels.device)
        labels = inverse[labels]
    return keep_largest_component(labels) if largest_component else labels
