"""The real demo dataset ``mni-tissue``: CSF / GM / WM on the MNI ICBM152 2009a template.

Built offline from the template files that ship inside the nilearn wheel (extra ``[demo]``); the
files are located with ``importlib.util.find_spec`` without importing nilearn, and nothing is
downloaded.  Labels (documented choices):

* brain = voxels where the skull-stripped T1 template is nonzero;
* inside the brain, P(CSF) = 1 - P(GM) - P(WM) (the wheel ships GM and WM probability maps only)
  and each voxel takes the most probable tissue: 1 CSF, 2 GM, 3 WM; 0 outside the brain.

Split by axial slab, never by hemisphere (the template is left-right symmetric): the inferior 60%
of the volume (slices ``z < 114`` at 1 mm, ``z < 57`` at 2 mm, the same world plane z = 42 mm) is
the training case, the superior 40% the held-out test case.  Written at 1 mm (197x233x189) and at 2
mm (99x117x95, a [1/4, 1/2, 1/4] anti-aliasing filter then every second voxel, labels re-derived
from the filtered probabilities) in the Decathlon layout, with the MNI copyright notice.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .atomic import write_text_atomic
from .io import DataError, write_nifti

log = logging.getLogger(__name__)

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
LABELS = {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
SPLIT_SLICE_1MM = 114  # 60.3% of 189 slices, even so that the 2 mm grid splits on the same plane

MNI_COPYRIGHT = """\
MNI ICBM152 non-linear symmetric 2009a template (via nilearn)

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University.
Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted,
provided that the above copyright notice appear in all copies.  The
authors and McGill University make no representations about the
suitability of this software for any purpose.  It is provided "as is"
without express or implied warranty.  The authors are not responsible
for any data loss, equipment damage, property loss, or injury to
subjects or patients resulting from the use or misuse of this software
package.

References: Fonov et al., NeuroImage 54(1) 2011; Fonov et al., NeuroImage 47 S102 2009;
Collins et al., Organization for Human Brain Mapping 1999.
Derived files (labels, slabs, 2 mm resampling) were produced by medswin; see dataset.json.
"""


def template_dir() -> Path:
    """Folder of the MNI template files inside the installed nilearn wheel (nilearn is not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "nilearn",
            "the demo dataset needs the MNI template from nilearn: pip install 'medswin[demo]' (or pip install nilearn)",
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [f for f in TEMPLATE_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise DataError(folder, f"nilearn is installed but lacks the MNI template file(s) {missing}; reinstall nilearn")
    return folder


def _downsample2(volume: np.ndarray) -> np.ndarray:
    """Anti-aliased factor-2 downsampling: [1/4, 1/2, 1/4] on every axis, then every second voxel."""
    out = volume.astype(np.float32)
    for axis in range(3):
        out = ndimage.convolve1d(out, [0.25, 0.5, 0.25], axis=axis, mode="nearest")
    return out[::2, ::2, ::2]


def tissue_labels(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Label map (0 bg, 1 CSF, 2 GM, 3 WM) from the T1 (brain mask) and GM/WM probabilities in [0, 1]."""
    brain = t1 > 0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    labels = (np.argmax(np.stack([csf, gm, wm]), 0) + 1).astype(np.uint8)
    labels[~brain] = 0
    return labels


def build_mni_tissue(out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/mni-tissue-1mm`` and ``out_dir/mni-tissue-2mm`` (Decathlon layout); returns both paths."""
    src = template_dir()
    images = {k: nib.load(str(src / f)) for k, f in TEMPLATE_FILES.items()}
    affine = images["t1"].affine
    data = {k: np.asarray(img.dataobj).astype(np.float32) for k, img in images.items()}
    t1, gm, wm = data["t1"], data["gm"] / 255.0, data["wm"] / 255.0
    out_dir = Path(out_dir)
    outputs = {}
    for res in (1, 2):
        if res == 1:
            t1_r, gm_r, wm_r, aff, split = t1, gm, wm, affine, SPLIT_SLICE_1MM
            brain_t1 = t1_r
        else:
            t1_r, gm_r, wm_r = (_downsample2(v) for v in (t1, gm, wm))
            aff, split = affine @ np.diag([2.0, 2.0, 2.0, 1.0]), SPLIT_SLICE_1MM // 2
            brain_t1 = _downsample2((t1 > 0).astype(np.float32)) >= 0.5  # majority of the 1 mm mask
        labels = tissue_labels(brain_t1.astype(np.float32), gm_r, wm_r)
        folder = out_dir / f"mni-tissue-{res}mm"
        meta: dict = {
            "name": f"mni-tissue-{res}mm",
            "description": "CSF/GM/WM labels on the MNI ICBM152 2009a symmetric template; training = inferior "
            "60% axial slab, test = superior 40% (held-out labels included for evaluation)",
            "reference": "Fonov et al. 2011; built by `medswin data prepare mni-tissue`",
            "licence": "MNI ICBM152 copyright notice, see LICENSE-MNI.txt",
            "tensorImageSize": "3D",
            "modality": {"0": "T1"},
            "labels": {str(v): k for k, v in LABELS.items()},
            "label_rule": "brain = T1 > 0; P(CSF) = 1 - P(GM) - P(WM); label = argmax(P(CSF), P(GM), P(WM)) in the brain",
            "spacing_mm": [float(res)] * 3,
            "split_world_z_mm": float(aff[2, 3] + aff[2, 2] * split),
        }
        for section, name, zslice, sub in (
            ("training", "mni_inferior", slice(0, split), "Tr"),
            ("test", "mni_superior", slice(split, None), "Ts"),
        ):
            slab_affine = aff.copy()  # the slab keeps its world position: origin at its first slice
            slab_affine[:3, 3] = (aff @ np.array([0, 0, zslice.start, 1.0]))[:3]
            slab_labels = labels[:, :, zslice]
            write_nifti(t1_r[:, :, zslice].astype(np.float32), slab_affine, folder / f"images{sub}" / f"{name}.nii.gz")
            write_nifti(slab_labels, slab_affine, folder / f"labels{sub}" / f"{name}.nii.gz")
            meta[section] = [{"image": f"./images{sub}/{name}.nii.gz", "label": f"./labels{sub}/{name}.nii.gz"}]
            meta[f"shape_{section}"] = list(slab_labels.shape)
            meta[f"label_counts_{section}"] = {k: int((slab_labels == v).sum()) for k, v in LABELS.items()}
        meta["numTraining"], meta["numTest"] = 1, 1
        write_text_atomic(folder / "dataset.json", json.dumps(meta, indent=2))
        write_text_atomic(folder / "LICENSE-MNI.txt", MNI_COPYRIGHT)
        log.info(
            "wrote %s (%s voxels, label counts %s)",
            folder,
            t1_r.shape,
            np.bincount(labels.ravel(), minlength=4).tolist(),
        )
        outputs[f"{res}mm"] = folder
    return outputs
