"""Evaluation: segmentation metrics (Dice, HD95, NSD, volumes) per class / BraTS region, and reports.

::

    from medswin.data.spec import get_dataset_spec
    from medswin.evaluation import evaluate_pairs, match_cases, write_report

    spec = get_dataset_spec("btcv")
    rows = evaluate_pairs(match_cases("predictions/", "labelsTs/"), spec)
    write_report(rows, spec, "report/")   # per_case.csv, summary.json, summary.md, boxplot_dice.png

Definitions and empty-mask conventions: :mod:`medswin.evaluation.metrics`; BraTS 2023+ lesion-wise Dice / HD95
(``evaluate_pairs(..., lesion_wise="BraTS-GLI")``): :mod:`medswin.evaluation.lesionwise`.
"""

from .lesionwise import CHALLENGES, lesion_wise_case, lesion_wise_scores
from .metrics import BRATS_EMPTY_HD95, binary_metrics, case_metrics, evaluate_pairs, match_cases
from .report import markdown_table, summarize, write_report

__all__ = [
    "BRATS_EMPTY_HD95",
    "CHALLENGES",
    "binary_metrics",
    "case_metrics",
    "evaluate_pairs",
    "lesion_wise_case",
    "lesion_wise_scores",
    "markdown_table",
    "match_cases",
    "summarize",
    "write_report",
]
