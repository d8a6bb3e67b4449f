"""3D labels from two X-ray views with a biplanar model (Swin-X2S).

    predictor = BiplanarPredictor.from_checkpoint("runs/x2s/checkpoint_best.pt")
    predictor.predict_file("case_coronal.nii.gz", "case_sagittal.png", "case_labels.nii.gz")

Views are read with :func:`medswin.data.drr.load_view` (2D NIfTI as written by the DRR tools, or
PNG/JPEG pictures with the superior side up) and min-max scaled to [0, 1]; the label volume
``(H, H, W)`` is written with the view-aligned grid's affine when the DRR geometry is found next to
the coronal view (``meta/{case}_drr.json`` or ``drr.json``), else with ``spacing`` mm voxels.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..amp import autocast
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..data.errors import DataError
from ..data.outputs import check_outputs
from ..data.spec import DatasetSpec
from ..device import resolve_device
from ..models import check_input_size, model_kind
from .postprocess import to_label_values

log = logging.getLogger(__name__)


class BiplanarPredictor:
    """Predict a 3D label volume from a coronal and a sagittal X-ray view (see the module docstring).

    Args:
        model: a biplanar model (``kind="biplanar"`` in the registry).
        spec: the biplanar dataset spec the model was trained for (its labels).
        amp: precision policy of :mod:`medswin.amp`.
        device: where the model runs (``None``: CUDA when available).
    """

    def __init__(
        self, model: nn.Module, spec: DatasetSpec, amp: str = "auto", device: str | torch.device | None = None
    ) -> None:
        if model_kind(model) != "biplanar":
            raise ValueError(f"{type(model).__name__} does not take two X-ray views: use Predictor")
        self.device = resolve_device(device)
        self.model, self.spec, self.amp = model.to(self.device).eval(), spec, amp
        autocast(amp, self.device)  # validates the precision policy on this device

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike | dict[str, Any], source: str | os.PathLike | None = None, **options: Any
    ) -> BiplanarPredictor:
        """A predictor for a Swin-X2S training checkpoint (a path, or one loaded with ``load_checkpoint``;
        ``source`` names its file in error messages)."""
        source = source or ("<checkpoint>" if isinstance(checkpoint, dict) else checkpoint)
        ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        model, spec = model_from_checkpoint(ckpt, source)
        return cls(model, spec, **options)

    def predict(self, coronal: str | os.PathLike, sagittal: str | os.PathLike) -> np.ndarray:
        """Label volume ``(H, H, W)`` (the dataset's label values) for the two views."""
        from ..data.drr import load_view

        views = []
        for name, path in (("coronal", coronal), ("sagittal", sagittal)):
            view = load_view(path)
            try:
                check_input_size(self.model, view.shape)
            except ValueError as exc:
                raise DataError(path, f"{name} view: {exc}") from None
            views.append(torch.from_numpy(view)[None, None].to(self.device))
        with torch.inference_mode(), autocast(self.amp, self.device):
            logits = self.model(*views).float()[0]
        labels = to_label_values(torch.softmax(logits, 0), self.spec)
        return labels.cpu().numpy().astype(np.int16)

    def predict_file(
        self,
        coronal: str | os.PathLike,
        sagittal: str | os.PathLike,
        out_path: str | os.PathLike,
        spacing: float = 1.0,
    ) -> Path:
        """Predict and write the label volume as NIfTI (affine from the DRR geometry when known); an output
        that would replace one of the views is refused first."""
        from ..data.biplanar import label_affine_for
        from ..data.io import write_nifti

        check_outputs([out_path], [coronal, sagittal])
        labels = self.predict(coronal, sagittal)
        affine = label_affine_for(coronal)
        if affine is None:
            affine = np.diag([spacing, spacing, spacing, 1.0])
            log.info("no DRR geometry next to %s: writing %g mm voxels at the origin", coronal, spacing)
        return write_nifti(labels, affine, out_path)
