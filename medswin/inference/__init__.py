"""Inference: sliding-window prediction of whole volumes, post-processing, DICOM-SEG output."""

from .predictor import (
    BiplanarPredictor,
    Prediction,
    Predictor,
    check_roi,
    predict_labels,
    predict_logits,
    resolve_inputs,
)
from .sliding_window import SlidingWindow

__all__ = [
    "BiplanarPredictor",
    "Prediction",
    "Predictor",
    "SlidingWindow",
    "check_roi",
    "predict_labels",
    "predict_logits",
    "resolve_inputs",
]
