"""Inference: sliding-window prediction of whole volumes, post-processing, DICOM-SEG output."""

from .predictor import Prediction, Predictor, check_roi, predict_labels, predict_logits, resolve_inputs

__all__ = ["Prediction", "Predictor", "check_roi", "predict_labels", "predict_logits", "resolve_inputs"]
