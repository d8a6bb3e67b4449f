"""The one table of file endings medswin reads and writes, and case names derived from file names.

Every module that looks for volumes in a folder, pairs files by case, or decides which reader to
use takes its endings from here, so that a format added once is found everywhere.
"""

from __future__ import annotations

NIFTI_ENDINGS = (".nii.gz", ".nii")
"""NIfTI-1/2 files, read with nibabel."""

SITK_VOLUME_ENDINGS = (".nrrd", ".nhdr", ".mha", ".mhd")
"""NRRD and MetaImage files, read with SimpleITK."""

VOLUME_ENDINGS = NIFTI_ENDINGS + SITK_VOLUME_ENDINGS
"""Files that hold one whole volume (a DICOM series is a folder instead)."""

DICOM_ENDINGS = (".dcm",)
"""Single DICOM files (slices of a series, or a DICOM-SEG output)."""

PICTURE_ENDINGS = (".png", ".jpg", ".jpeg")
"""2D pictures: X-ray views for Swin-X2S (radiograph orientation)."""

READABLE_ENDINGS = VOLUME_ENDINGS + DICOM_ENDINGS
"""Every file ending :func:`medswin.data.io.load_volume` reads (besides DICOM series folders)."""


def volume_ending(name: str) -> str | None:
    """The volume ending of a file name (``".nii.gz"`` for ``"ct.NII.GZ"``), or ``None``."""
    lower = name.lower()
    return next((e for e in VOLUME_ENDINGS + DICOM_ENDINGS if lower.endswith(e)), None)


def strip_ending(name: str) -> str:
    """``name`` without its volume or DICOM ending (``"case_001.nii.gz"`` -> ``"case_001"``); other names unchanged."""
    ending = volume_ending(name)
    return name[: -len(ending)] if ending else name


def is_volume_file(name: str) -> bool:
    """True when ``name`` ends like a whole-volume file (NIfTI, NRRD, MetaImage) and is not hidden."""
    return not name.startswith(".") and name.lower().endswith(VOLUME_ENDINGS)
