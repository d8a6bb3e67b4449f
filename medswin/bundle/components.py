"""The config components MONAI lacks, referenced by dotted path from the bundle configs
(``medswin.bundle.datalist``, ``medswin.bundle.BiplanarPair``, ...).

* :func:`datalist` -- the cases of a dataset folder in any layout medswin reads, split into
  training / validation, or the inputs to predict;
* :class:`BiplanarPair` -- Swin-X2S with its two views stacked as channels ``(B, 2C, H, W)``, so
  that the bundle network has the single input MONAI's inferers, ``verify_net_in_out`` and
  ``ckpt_export`` expect;
* :class:`RegionsToLabelsd` -- region probabilities (BraTS TC/WT/ET) to the dataset's label map;
* :class:`BiplanarLabelGridd` -- puts a Swin-X2S prediction on the label grid recorded next to its
  coronal view, so ``SaveImaged`` writes it in world coordinates.

The bundles read files with :class:`medswin.data.loading.LoadVolumed` / ``LoadViewd`` (the data
layer's checked reader), never with MONAI's ``LoadImaged`` and its fallback readers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from torch import nn

from ..data.errors import DataError
from ..models import model_kind

log = logging.getLogger(__name__)


def datalist(
    dataset_dir: str | os.PathLike,
    section: str = "training",
    dataset: str | None = None,
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """MONAI data dicts of a dataset folder, in any layout :mod:`medswin.data.datalist` reads.

    ``section``: ``training`` / ``validation`` (the layout's own validation list when it has one, else
    fold ``fold`` of a seeded ``n_folds``-fold split of the labelled cases; fewer folds for fewer
    cases, and a single case is used for both), or ``inference`` (the images of the test section,
    else of the training cases; also a single file or a folder of volumes).  ``dataset`` names the
    registry entry when the layout needs it (BraTS file naming, nnU-Net channel count).
    """
    from ..data.datalist import build_datalist, detect_layout, kfold_split, to_monai
    from ..data.spec import get_dataset_spec

    if section not in ("training", "validation", "inference"):
        raise ValueError(f"section must be training, validation or inference, got {section!r}")
    root = Path(dataset_dir)
    if not root.exists():
        raise DataError(root, "dataset folder not found (set the bundle's dataset_dir)")
    spec = get_dataset_spec(dataset) if dataset else None
    if section == "inference":
        try:
            layout = detect_layout(root) if root.is_dir() else None
        except DataError:  # a plain folder of volumes (or DICOM series)
            layout = None
        if layout is None:
            from ..data.inputs import resolve_inputs

            inputs = resolve_inputs(root, spec)
            return [{"image": [str(p) for p in paths] if len(paths) > 1 else str(paths[0])} for _, paths in inputs]
        sections = build_datalist(root, spec, layout)  # the folder's own layout: what is there to predict
        items = to_monai(sections.get("test") or sections.get("training", []))
        return [{k: v for k, v in it.items() if k not in ("label", "case")} for it in items]
    sections = build_datalist(root, spec)
    train = [c for c in to_monai(sections.get("training", [])) if "label" in c]
    if sections.get("validation"):
        val = [c for c in to_monai(sections["validation"]) if "label" in c]
        return train if section == "training" else val
    if not train:
        raise DataError(root, "no labelled training cases")
    if len(train) == 1:
        log.warning("%s: one labelled case, used for training and validation", root)
        return train
    k = min(n_folds, len(train))
    tr, va = kfold_split(train, k, fold % k, seed)
    return tr if section == "training" else va


class BiplanarPair(nn.Module):
    """A biplanar model (Swin-X2S) with one input: the coronal and sagittal views stacked as channels.

    ``forward(x)`` with ``x`` ``(B, 2C, H, W)`` (channels ``[:C]`` coronal, ``[C:]`` sagittal) returns
    the model's output for the two views: ``(B, K, H, H, W)`` logits in eval mode, the per-view dict
    in training mode.  MONAI's inferers, ``verify_net_in_out`` and ``ckpt_export`` take single-input
    networks; the state dict is the model's under ``model.``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if model_kind(model) != "biplanar":
            raise ValueError(f"BiplanarPair wraps a biplanar model (two X-ray views), got {type(model).__name__}")
        self.model = model
        self.view_channels = int(model.in_channels)
        self.in_channels, self.out_channels = 2 * self.view_channels, int(model.out_channels)
        self.size_divisor = getattr(model, "size_divisor", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """``(B, 2C, H, W)`` -> the wrapped model's output for ``(x[:, :C], x[:, C:])``."""
        if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != self.in_channels):
            raise ValueError(f"expected the two views stacked as (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        c = self.view_channels
        return self.model(x[:, :c], x[:, c:])


class RegionsToLabelsd(MapTransform):
    """Region probabilities ``(R, X, Y, Z)`` -> label map ``(1, X, Y, Z)`` with the dataset's values
    (each region thresholded at ``threshold``, nested regions painted over larger ones: BraTS 2021
    WT -> 2, TC -> 1, ET -> 4); see :func:`medswin.inference.postprocess.regions_to_labels`."""

    def __init__(
        self,
        keys: KeysCollection,
        regions: Mapping[str, Sequence[int]],
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        from ..inference.postprocess import region_label_values

        region_label_values(regions)  # fails now, not at the first case, if the regions are not nested sets
        self.regions, self.threshold = {k: tuple(v) for k, v in regions.items()}, threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Convert every key present (MetaTensor meta data kept)."""
        from ..inference.postprocess import regions_to_labels

        d = dict(data)
        for key in self.key_iterator(d):
            probs = d[key]
            if probs.shape[0] != len(self.regions):
                raise ValueError(
                    f"{key}: {probs.shape[0]} channels for {len(self.regions)} regions {list(self.regions)}"
                )
            labels = regions_to_labels(torch.as_tensor(probs), self.regions, self.threshold)[None]
            d[key] = MetaTensor(labels, meta=probs.meta) if isinstance(probs, MetaTensor) else labels
        return d


class BiplanarLabelGridd(MapTransform):
    """A Swin-X2S prediction ``(K, H, H, W)`` as a MetaTensor on the view-aligned label grid.

    The affine is the one recorded next to the coronal view by ``medswin data prepare-x2s`` / ``drr``
    (``meta/{case}_drr.json`` or ``drr.json``), else ``spacing`` mm voxels at the origin; the file
    name becomes ``{case}`` (the view's name without ``_coronal``) so ``SaveImaged`` writes
    ``{case}{postfix}.nii.gz``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        view_key: str = "image_coronal",
        spacing: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.view_key, self.spacing = view_key, spacing

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Attach the label-grid affine and the case name to every key present."""
        from ..data.biplanar import label_affine_for

        d = dict(data)
        view = d[self.view_key]
        source = view.meta.get("filename_or_obj") if isinstance(view, MetaTensor) else view
        if not source:
            raise ValueError(f"{self.view_key}: no file name to find the DRR geometry from")
        source = Path(str(source))
        affine = label_affine_for(source)
        if affine is None:
            affine = np.diag([self.spacing, self.spacing, self.spacing, 1.0])
            log.info("no DRR geometry next to %s: writing %g mm voxels at the origin", source, self.spacing)
        name = source.name.split("_coronal")[0].split("_sagittal")[0].removesuffix(".nii.gz").removesuffix(".nii")
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key])
            meta = {
                "filename_or_obj": str(source.parent / f"{name}.nii.gz"),
                "original_affine": affine,
                "spatial_shape": np.asarray(pred.shape[1:]),
            }
            d[key] = MetaTensor(pred, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
        return d
