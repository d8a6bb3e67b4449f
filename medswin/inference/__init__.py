"""Inference: sliding-window prediction of whole volumes."""

from .predictor import check_roi, predict_logits, predict_labels

__all__ = ["check_roi", "predict_labels", "predict_logits"]
