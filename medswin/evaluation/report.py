"""Evaluation reports: summary statistics, a per-case CSV, JSON and Markdown summaries and figures.

:func:`summarize` turns the rows of :func:`medswin.evaluation.metrics.evaluate_pairs` (one per case
and class) into per-class statistics; :func:`write_report` writes, each file atomically (temp file
in the output folder, then ``os.replace``):

* ``per_case.csv``: one row per case and class (``case, class, dice, hd95, nsd, volume_pred_ml,
  volume_gt_ml, volume_diff_ml``);
* ``summary.json``: :func:`summarize`'s dictionary;
* ``summary.md``: :func:`markdown_table` (class | Dice mean ± std | HD95 mean | NSD mean, and a mean row);
* ``boxplot_dice.png``: the distribution of Dice per class;
* with ``images``: ``overlay_best.png`` / ``overlay_worst.png``, the cases with the highest / lowest
  mean Dice: an axial slice of the image with the ground truth and the prediction side by side.

matplotlib (``pip install 'medswin[demo]'``) is imported only when the figures are drawn, with
the Agg (file-only) canvas; without it the figures are skipped with a warning.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.atomic import atomic_write
from ..data.errors import DataError
from .metrics import METRIC_KEYS

if TYPE_CHECKING:
    from ..data.spec import DatasetSpec

log = logging.getLogger(__name__)

__all__ = ["CSV_COLUMNS", "SUMMARY_METRICS", "markdown_table", "summarize", "write_report"]

CSV_COLUMNS = ("case", "class", *METRIC_KEYS)
SUMMARY_METRICS = ("dice", "hd95", "nsd", "centroid_error_mm", "identified")
LESION_COLUMNS = ("lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fn", "lesion_fp")


def _lesion_wise(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the rows carry BraTS lesion-wise scores (``evaluate_pairs(..., lesion_wise=...)``)."""
    return any("lesion_dice" in row for row in rows)


# overlay colours per label (RGB), in the order of the spec's foreground labels
_PALETTE = (
    (0.90, 0.10, 0.10),
    (0.10, 0.75, 0.10),
    (0.15, 0.35, 0.95),
    (0.95, 0.85, 0.10),
    (0.90, 0.20, 0.90),
    (0.10, 0.85, 0.85),
    (1.00, 0.55, 0.00),
    (0.55, 0.25, 0.05),
    (0.60, 0.60, 1.00),
    (0.50, 0.90, 0.50),
    (1.00, 0.60, 0.75),
    (0.50, 0.50, 0.00),
    (0.00, 0.50, 0.50),
    (0.70, 0.70, 0.70),
)


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------


def _class_order(rows: Sequence[Mapping[str, Any]], spec: DatasetSpec) -> list[str]:
    """The spec's regions (or foreground labels by value), then any other class found in the rows."""
    if spec.regions:
        names = list(spec.regions)
    else:
        names = [name for name in sorted(spec.labels, key=spec.labels.__getitem__) if spec.labels[name] != 0]
    present = {str(row["class"]) for row in rows}
    order = [name for name in names if name in present]
    order += sorted(present - set(order))
    return order


def _stats(values: Sequence[float]) -> dict[str, float | int | None]:
    data = np.asarray([float(v) for v in values if v is not None and not math.isnan(float(v))], dtype=np.float64)
    if data.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0}
    return {"mean": float(data.mean()), "std": float(data.std()), "median": float(np.median(data)), "n": int(data.size)}


def summarize(rows: Sequence[Mapping[str, Any]], spec: DatasetSpec) -> dict[str, Any]:
    """Per-class statistics of evaluation rows, JSON-serialisable.

    ``rows`` are :func:`~medswin.evaluation.metrics.evaluate_pairs`'s (``case``, ``class``, ``dice``,
    ``hd95``, ``nsd``, ...).  Returns::

        {"dataset": name, "num_cases": N, "classes": [names...],
         "per_class": {class: {"dice": {"mean", "std", "median", "n"}, "hd95": {...}, "nsd": {...}}},
         "mean_dice": ..., "mean_hd95": ..., "mean_nsd": ...}

    ``std`` is the population standard deviation (``numpy.std``, ``ddof=0``).  ``mean_*`` is the
    mean over classes of the per-class means (background never is a class: for BTCV the mean over
    the 13 organs, for BraTS over TC/WT/ET).  Classes follow the spec's order.
    """
    if not rows:
        raise ValueError("no evaluation rows to summarise (no cases were evaluated)")
    order = _class_order(rows, spec)
    lesions = _lesion_wise(rows)
    metrics = SUMMARY_METRICS + (LESION_COLUMNS if lesions else ())
    per_class: dict[str, dict[str, Any]] = {}
    for name in order:
        mine = [row for row in rows if str(row["class"]) == name]
        per_class[name] = {metric: _stats([row.get(metric) for row in mine]) for metric in metrics}
        if lesions:  # lesion counts: totals over the cases as well
            for key in LESION_COLUMNS[2:]:
                per_class[name][key]["total"] = int(sum(row.get(key, 0) for row in mine))
    summary: dict[str, Any] = {
        "dataset": spec.name,
        "num_cases": len({str(row["case"]) for row in rows}),
        "classes": order,
        "per_class": per_class,
    }
    for metric in SUMMARY_METRICS + (LESION_COLUMNS[:2] if lesions else ()):
        means = [per_class[name][metric]["mean"] for name in order if per_class[name][metric]["mean"] is not None]
        summary[f"mean_{metric}"] = float(np.mean(means)) if means else None
    return summary


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(summary: Mapping[str, Any], centroids: bool = False) -> str:
    """A Markdown table of :func:`summarize`'s result: class | Dice mean ± std | HD95 mean (mm) | NSD mean,
    one line per class and a last line with the means over classes.  ``centroids=True`` adds the
    centroid L-error (mm) and the ID rate (share of structures found within 20 mm), for Swin-X2S."""
    header = "| class | Dice mean ± std | HD95 mean (mm) | NSD mean |"
    rule = "|---|---|---|---|"
    lesions = "lesion_dice" in summary["per_class"][summary["classes"][0]] if summary["classes"] else False
    if centroids:
        header, rule = header + " centroid error (mm) | ID rate |", rule + "---|---|"
    if lesions:
        header += " lesion-wise Dice | lesion-wise HD95 (mm) | lesions TP / FN / FP |"
        rule += "---|---|---|"
    lines = [header, rule]
    for name in summary["classes"]:
        stats = summary["per_class"][name]
        dice = stats["dice"]
        dice_text = "n/a" if dice["mean"] is None else f"{dice['mean']:.4f} ± {dice['std']:.4f}"
        line = f"| {name} | {dice_text} | {_fmt(stats['hd95']['mean'], 2)} | {_fmt(stats['nsd']['mean'], 4)} |"
        if centroids:
            line += f" {_fmt(stats['centroid_error_mm']['mean'], 2)} | {_fmt(stats['identified']['mean'], 3)} |"
        if lesions:
            counts = " / ".join(str(stats[k]["total"]) for k in ("lesion_tp", "lesion_fn", "lesion_fp"))
            line += f" {_fmt(stats['lesion_dice']['mean'], 4)} | {_fmt(stats['lesion_hd95']['mean'], 2)} | {counts} |"
        lines.append(line)
    means = [_fmt(summary["mean_dice"], 4), _fmt(summary["mean_hd95"], 2), _fmt(summary["mean_nsd"], 4)]
    if centroids:
        means += [_fmt(summary["mean_centroid_error_mm"], 2), _fmt(summary["mean_identified"], 3)]
    if lesions:
        means += [_fmt(summary["mean_lesion_dice"], 4), _fmt(summary["mean_lesion_hd95"], 2), ""]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# atomic writers
# ---------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    return atomic_write(path, write)


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = CSV_COLUMNS + (LESION_COLUMNS if _lesion_wise(rows) else ())

    def cell(row: Mapping[str, Any], key: str) -> str:
        if key in ("case", "class"):
            return row[key]
        if key not in row:  # a class without lesion-wise scores
            return ""
        return str(row[key]) if key in LESION_COLUMNS[2:] else repr(float(row[key]))

    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row, key) for key in columns])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _boxplot(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], path: Path) -> Path:
    order = summary["classes"]
    data = [[float(row["dice"]) for row in rows if str(row["class"]) == name] for name in order]
    fig = _figure(max(4.0, 0.7 * len(order) + 2.0), 4.0)
    ax = fig.add_subplot()
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(order) + 1))
    ax.set_xticklabels(order, rotation=45 if len(order) > 5 else 0, ha="right" if len(order) > 5 else "center")
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{summary['dataset']}: Dice per class ({summary['num_cases']} cases)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save_png(fig, path)


def _case_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean Dice over classes of each case, in the rows' case order."""
    per_case: dict[str, list[float]] = {}
    for row in rows:
        per_case.setdefault(str(row["case"]), []).append(float(row["dice"]))
    return {case: float(np.mean(values)) for case, values in per_case.items()}


def _axial_slice(*masks: np.ndarray) -> int:
    """The axial (Z) index in the middle of the foreground's extent, or the volume's middle when empty."""
    union = np.logical_or.reduce([m != 0 for m in masks])
    hits = np.flatnonzero(union.any(axis=(0, 1)))
    if hits.size == 0:
        return union.shape[2] // 2
    return int((hits[0] + hits[-1]) // 2)


def _overlay(
    case: str,
    mean_dice: float,
    which: str,
    image_path: str | os.PathLike,
    row: Mapping[str, Any],
    spec: DatasetSpec,
    path: Path,
) -> Path:
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from ..data.io import check_pair, load_volume

    gt = load_volume(row["gt_path"])
    pred = load_volume(row["pred_path"])
    image = load_volume(image_path)
    try:
        check_pair(image, gt)
    except DataError as exc:
        problem = f"image of case {case!r} is not on its ground truth's grid: {exc.problem}"
        raise DataError(image_path, problem) from None
    check_pair(gt, pred)
    gt_labels, pred_labels = gt.array[0], pred.array[0]
    k = _axial_slice(gt_labels, pred_labels)
    # (X, Y) slice shown with X to the right and Y upwards: transpose, origin lower, aspect = dy / dx
    picture = np.asarray(image.array[0, :, :, k], dtype=np.float64).T
    lo, hi = np.percentile(picture, (1, 99)) if picture.size else (0.0, 1.0)
    values = [v for v in sorted(spec.labels.values()) if v != 0]
    extra = sorted(set(np.union1d(np.unique(gt_labels), np.unique(pred_labels)).astype(int).tolist()) - {0, *values})
    values += extra
    colours = [(0.0, 0.0, 0.0, 0.0)] + [(*_PALETTE[i % len(_PALETTE)], 0.45) for i in range(len(values))]
    cmap = ListedColormap(colours)
    spacing = gt.spacing
    aspect = spacing[1] / spacing[0]

    fig = _figure(10.0, 5.4)
    axes = fig.subplots(1, 2)
    for ax, labels, title in ((axes[0], gt_labels, "ground truth"), (axes[1], pred_labels, "prediction")):
        slab = labels[:, :, k].T
        index = np.zeros(slab.shape, dtype=np.int64)
        for i, value in enumerate(values, 1):
            index[slab == value] = i
        ax.imshow(
            picture,
            cmap="gray",
            vmin=lo,
            vmax=hi if hi > lo else lo + 1,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
        ax.imshow(index, cmap=cmap, vmin=0, vmax=len(values), origin="lower", aspect=aspect, interpolation="nearest")
        for i, value in enumerate(values):
            if np.any(slab == value):
                ax.contour(
                    (slab == value).astype(np.float32),
                    levels=[0.5],
                    colors=[_PALETTE[i % len(_PALETTE)]],
                    linewidths=0.8,
                    origin="lower",
                )
        ax.set_title(title)
        ax.set_axis_off()
    names = {value: name for name, value in spec.labels.items()}
    handles = [
        Patch(color=_PALETTE[i % len(_PALETTE)], label=names.get(value, str(value))) for i, value in enumerate(values)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize="small", frameon=False)
    fig.suptitle(f"{which} case {case}: mean Dice {mean_dice:.4f} (axial slice z={k})")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save_png(fig, path)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def write_report(
    rows: Sequence[Mapping[str, Any]],
    spec: DatasetSpec,
    out_dir: str | os.PathLike,
    images: Mapping[str, str | os.PathLike] | None = None,
) -> dict[str, Path]:
    """Write the evaluation report of ``rows`` to ``out_dir``; return ``{name: path}`` of the files written.

    Files (each written atomically): ``per_case.csv``, ``summary.json``, ``summary.md``,
    ``boxplot_dice.png`` and, when ``images`` maps case ids to image files, ``overlay_best.png`` and
    ``overlay_worst.png`` for the cases with the highest and lowest mean Dice over classes (the
    middle axial slice of the foreground: image ``(X, Y)`` with the ground truth and the prediction
    side by side; images with several channels show channel 0).  Overlays need the rows'
    ``pred_path`` / ``gt_path`` (as :func:`~medswin.evaluation.metrics.evaluate_pairs` gives them).
    Keys of the result: ``per_case_csv``, ``summary_json``, ``summary_md``, ``boxplot_dice``,
    ``overlay_best``, ``overlay_worst``.  Without matplotlib the figures are skipped with a warning.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, spec)
    paths: dict[str, Path] = {
        "per_case_csv": _write_text(out / "per_case.csv", _csv_text(rows)),
        "summary_json": _write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n"),
    }
    markdown = f"# Evaluation: {spec.name}\n\n{summary['num_cases']} case(s).\n\n{markdown_table(summary)}\n"
    paths["summary_md"] = _write_text(out / "summary.md", markdown)

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'medswin[demo]'): no figures in %s", out)
        return paths
    paths["boxplot_dice"] = _boxplot(rows, summary, out / "boxplot_dice.png")

    if images:
        means = _case_means(rows)
        best = max(means, key=means.__getitem__)
        worst = min(means, key=means.__getitem__)
        for key, which, case in (("overlay_best", "best", best), ("overlay_worst", "worst", worst)):
            if case not in images:
                log.warning("no image given for the %s case %s: %s.png skipped", which, case, key)
                continue
            row = next(r for r in rows if str(r["case"]) == case)
            if "pred_path" not in row or "gt_path" not in row:
                log.warning("rows carry no pred_path / gt_path (use evaluate_pairs' rows): %s.png skipped", key)
                continue
            paths[key] = _overlay(case, means[case], which, images[case], row, spec, out / f"{key}.png")
    log.info("evaluation report (%d cases) written to %s", summary["num_cases"], out)
    return paths
