"""Dataset integrity check (like nnU-Net's): read every case of a folder and report every problem.

``check_dataset(root, spec)`` loads each image channel and label, and collects the problems that
training would otherwise hit one crash at a time: missing files, unreadable or truncated files,
channel files on different grids, wrong channel count, NaN/inf, empty images, missing labels,
label values outside the spec, image/label shape or affine mismatch.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .datalist import build_datalist
from .io import DataError, check_image, check_label, check_pair, load_channels, load_volume
from .spec import DatasetSpec

log = logging.getLogger(__name__)


@dataclass
class CheckReport:
    """Problems found (``"<file>: <problem>"`` each), cases read, and spacings seen."""

    root: str
    dataset: str
    cases: int = 0
    problems: list[str] = field(default_factory=list)
    spacings: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def text(self) -> str:
        """Human-readable report."""
        lines = [f"dataset {self.dataset!r} at {self.root}: {self.cases} case(s) checked"]
        if self.spacings:
            common = ", ".join(f"{'x'.join(f'{s:g}' for s in sp)} mm ({n})" for sp, n in self.spacings.most_common(3))
            lines.append(f"spacings: {common}")
        if self.ok:
            lines.append("no problems found")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def check_case(item: dict, spec: DatasetSpec, require_label: bool) -> tuple[list[str], tuple[float, ...] | None]:
    """Problems of one datalist item, and its image spacing when readable."""
    problems: list[str] = []
    image = None
    try:
        image = load_channels([Path(p) for p in item["image"]])
        check_image(image, spec.num_channels, spec.channel_names)
    except DataError as exc:
        problems.append(str(exc))
    label_path = item.get("label")
    if label_path is None or not Path(label_path).exists():
        if require_label:
            where = label_path if label_path is not None else item["image"][0]
            problems.append(f"{where}: label file missing for case {item['case']!r}")
        return problems, image.spacing if image is not None else None
    try:
        label = load_volume(label_path)
        check_label(label, spec.label_values, spec.name)
        if image is not None:
            check_pair(image, label)
    except DataError as exc:
        problems.append(str(exc))
    return problems, image.spacing if image is not None else None


def check_dataset(root: str | Path, spec: DatasetSpec, layout: str | None = None, progress: bool = True) -> CheckReport:
    """Check every case under ``root`` against ``spec``; never raises for bad cases, reports them."""
    report = CheckReport(str(root), spec.name)
    try:
        sections = build_datalist(root, spec, layout)
    except DataError as exc:
        report.problems.append(str(exc))
        return report
    for section, items in sections.items():
        for item in tqdm(items, desc=f"checking {section}", disable=not progress, leave=False):
            problems, spacing = check_case(item, spec, require_label=section != "test")
            report.cases += 1
            report.problems += problems
            if spacing is not None:
                report.spacings[tuple(round(s, 3) for s in spacing)] += 1
    return report
