"""Evaluation: segmentation metrics (Dice, HD95, NSD, volumes) per class / BraTS region, and reports.

::

    from medswin.data.spec import get_dataset_spec
    from medswin.evaluation import evaluate_pairs, match_cases, write_report

    spec = get_dataset_spec("btcv")
    rows = evaluate_pairs(match_cases("predictions/", "labelsTs/"), spec)
    write_report(rows, spec, "report/")   # per_case.csv, summary.json, summary.md, boxplot_dice.png

Definitions and empty-mask conventions: :mod:`medswin.evaluation.metrics`.
"""

from .metrics import BRATS_EMPTY_HD95, binary_metrics, case_metrics, evaluate_pairs, match_cases
from .report import markdown_table, summarize, write_report

__all__ = [
    "BRATS_EMPTY_HD95",
    "binary_metrics",
    "case_metrics",
    "evaluate_pairs",
    "markdown_table",
    "match_cases",
    "summarize",
    "write_report",
]
