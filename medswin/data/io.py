"""Reading and writing volumes.  Writers are atomic: a temp file in the target folder, then a rename,
so an interrupted run never leaves a truncated output and never half-overwrites a user's file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``array`` (``(D, H, W)`` or ``(D, H, W, C)``) with ``affine`` to ``path`` atomically.

    Integer label maps are stored as uint8 (or int16 beyond 255 labels).  Returns the path.
    """
    path = Path(path)
    if not str(path).endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: NIfTI outputs must end in .nii or .nii.gz")
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        array = array.astype(np.uint8 if array.min() >= 0 and array.max() <= 255 else np.int16)
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if str(path).endswith(".nii.gz") else ".nii"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.chmod(tmp, _default_file_mode())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
