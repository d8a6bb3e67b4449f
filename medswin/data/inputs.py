"""The cases to predict from one input path, and their names (what ``medswin predict -i`` accepts).

``resolve_inputs(path)`` -> ``[(case, [file per channel]), ...]`` for:

* one volume file (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``);
* a DICOM series folder (one series; several are reported by the reader with their UIDs);
* a datalist JSON: a list of ``{"image": ...}`` entries or paths, or a Decathlon-style dict
  (its ``test`` section when present, else ``training``, else ``validation``);
* a dataset folder in any layout of :mod:`medswin.data.datalist` (its test section when present,
  else its training cases);
* a plain folder of volumes, nnU-Net channel files ``case_0000``, ``case_0001`` grouped per case.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DataError
from .formats import DICOM_ENDINGS, VOLUME_ENDINGS, is_volume_file, strip_ending

if TYPE_CHECKING:
    from .spec import DatasetSpec

Case = tuple[str, list[Path]]
KNOWN_ENDINGS = VOLUME_ENDINGS + (".json", ".yaml", ".yml", ".txt", ".md", ".csv", ".png", ".jpg")


def case_name(path: str | os.PathLike) -> str:
    """The case a file or DICOM folder stands for: its name without the volume ending."""
    return strip_ending(Path(path).name)


def resolve_inputs(path: str | os.PathLike, spec: DatasetSpec | None = None) -> list[Case]:
    """The cases of an input path (see the module docstring), sorted as found.

    Args:
        path: a file, a DICOM series folder, a datalist ``.json``, a dataset folder or a folder of volumes.
        spec: the dataset the model was trained for (its layout and channel naming help read dataset folders).

    Raises :class:`DataError` naming the path when it holds nothing to predict.
    """
    from .datalist import build_datalist, detect_layout
    from .io import list_dicom_series

    path = Path(path)
    try:
        found = path.exists()
    except OSError as exc:  # e.g. a file name longer than the file system allows
        raise DataError(path, f"cannot access ({exc.strerror or exc})") from None
    if not found:
        if path.is_symlink():  # a loop or a dangling link: the byte-level check names which
            from .sniff import sniff

            sniff(path)
        raise DataError(path, "input not found")
    if path.is_file() and path.suffix.lower() == ".json":
        return _datalist_inputs(path)
    if path.is_file():
        return [(case_name(path), [path])]
    if _may_hold_dicom(path):
        try:
            if list_dicom_series(path):
                return [(path.name, [path])]
        except DataError as exc:
            if not exc.problem.startswith("no DICOM files"):
                raise
    try:
        layout = detect_layout(path)  # the folder's own layout: the model's training layout does not matter here
    except DataError:
        pass
    else:
        sections = build_datalist(path, spec, layout)
        items = sections.get("test") or sections.get("training", [])
        return [(it["case"], list(it["image"])) for it in items]
    files = sorted(p for p in path.iterdir() if p.is_file() and is_volume_file(p.name))
    if not files:
        raise DataError(path, "no volumes here (expected NIfTI/NRRD/MHA files, DICOM files or a dataset layout)")
    groups: dict[str, list[Path]] = {}
    for f in files:
        m = re.match(r"(.+)_(\d{4})$", case_name(f))
        groups.setdefault(m.group(1) if m else case_name(f), []).append(f)
    return sorted(groups.items())


def _may_hold_dicom(folder: Path) -> bool:
    """True when ``folder`` holds ``.dcm`` files or files without a known ending (DICOM slices often have none)."""
    for p in folder.iterdir():
        name = p.name.lower()
        if (
            p.is_file()
            and not name.startswith(".")
            and (name.endswith(DICOM_ENDINGS) or not name.endswith(KNOWN_ENDINGS))
        ):
            return True
    return False


def _datalist_inputs(path: Path) -> list[Case]:
    """Cases of a datalist JSON (see the module docstring); relative paths are relative to the JSON file."""
    from .datalist import read_json

    data = read_json(path, "datalist")
    if isinstance(data, dict):
        data = data.get("test") or data.get("training") or data.get("validation") or []
    if not isinstance(data, list):
        raise DataError(path, "a datalist is a list of entries, or a dict with a 'test'/'training' list")
    cases = []
    for entry in data:
        images = entry.get("image") if isinstance(entry, dict) else entry
        if images is None or isinstance(images, (dict, int, float)):
            raise DataError(path, f"an entry has no image path: {entry!r}")
        images = images if isinstance(images, list) else [images]
        paths = [Path(p) if Path(p).is_absolute() else (path.parent / p).resolve() for p in map(str, images)]
        cases.append((case_name(paths[0]), paths))
    if not cases:
        raise DataError(path, "the datalist has no entries")
    return cases
