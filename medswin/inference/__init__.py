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

__all__ = ["BiplanarPredictor", "Prediction", "Predictor", "check_roi", "predict_labels", "predict_logits", "resolve_inputs"]
