"""Evaluation of detectors trained with hnm_d2: false alarms on negative images beside COCO AP."""

from .negative_evaluator import (
    NegativeImageEvaluator,
    build_hnm_evaluator,
    build_negative_evaluator,
    count_detections_at_thresholds,
    positive_subset_name,
    summarize_false_alarms,
)

__all__ = [
    "NegativeImageEvaluator",
    "build_hnm_evaluator",
    "build_negative_evaluator",
    "count_detections_at_thresholds",
    "positive_subset_name",
    "summarize_false_alarms",
]
