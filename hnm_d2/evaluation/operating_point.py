"""Detector comparison at the same operating point: false alarms at a matched recall, the
log-average miss rate and the FROC curve. Tensors and arrays in, numbers out; no model.

False alarms at one score threshold reward a model that is merely less confident everywhere
(fewer alarms, but fewer hits). Here the threshold is set by the positives instead: the highest
score threshold at which the detector finds a given share of the objects (recall, at IoU 0.5),
and the false alarms that threshold lets through on the negative images are counted.

Matching (:func:`match_detections`) is COCO's greedy one, class by class: detections in order
of decreasing score, each to the unmatched ground-truth box of its class with the highest IoU
at or above the IoU threshold. A detection matched to a crowd region is ignored (neither hit
nor false alarm), as COCO does: a crowd region of the detection's class covering at least the
IoU threshold of the detection's area. Detections with equal scores pass a threshold together, so
every curve point is a distinct score.
"""

import math
from typing import List, NamedTuple

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_ioa, pairwise_iou

__all__ = [
    "DetectionCurve",
    "match_detections",
    "detection_curve",
    "false_alarms_at_recall",
    "log_average_miss_rate",
    "MISS_RATE_FPPI_RANGE",
]

# The Caltech pedestrian benchmark's MR^-2: 9 reference points evenly spaced in log space
# between 10^-2 and 10^0 false positives per image.
MISS_RATE_FPPI_RANGE = (1e-2, 1e0)
_MISS_RATE_POINTS = 9


class DetectionCurve(NamedTuple):
    """Detector performance at every distinct score threshold, highest threshold first.

    At threshold ``thresholds[i]`` the detections scored >= it are kept; then
    ``recall[i]`` of the ground-truth objects are found, ``fa_per_negative_image[i]`` false
    alarms per negative image and ``fp_per_image[i]`` false positives per test image (on
    positive and negative images) are made. All arrays have shape (T,), float64.
    """

    thresholds: np.ndarray
    recall: np.ndarray
    fa_per_negative_image: np.ndarray
    fp_per_image: np.ndarray
    num_objects: int
    num_images: int
    num_negative_images: int


def _best_unmatched(ious: torch.Tensor, taken: torch.Tensor, iou_thresh: float) -> int:
    """Index of the untaken box with the highest IoU >= ``iou_thresh``, or -1."""
    candidates = torch.where(taken, torch.full_like(ious, -1.0), ious)
    if candidates.numel() == 0 or candidates.max() < iou_thresh:
        return -1
    return int(candidates.argmax())


def match_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    crowd_boxes: torch.Tensor = None,
    crowd_classes: torch.Tensor = None,
    iou_thresh: float = 0.5,
):
    """Greedy matching of one image's detections to its ground truth (COCO's rule).

    Args:
        boxes (Tensor): (N, 4) XYXY detections; scores (N,); classes (N,) int64.
        gt_boxes (Tensor): (G, 4) XYXY ground-truth boxes; gt_classes (G,) int64.
        crowd_boxes (Tensor or None): (C, 4) crowd regions; crowd_classes (C,) their classes.
            A detection that matches no object but lies in a crowd region of its class
            (intersection over the detection's own area >= ``iou_thresh``, COCO's rule) is
            ignored.
        iou_thresh (float): the IoU at which a detection finds an object.

    Returns:
        Tensor: int8 per detection, 1 = hit, 0 = false positive, -1 = ignored (crowd).
    """
    outcome = torch.zeros(len(boxes), dtype=torch.int8)
    ious = pairwise_iou(Boxes(boxes), Boxes(gt_boxes))  # (N, G)
    same_class = classes[:, None] == gt_classes[None, :]
    ious = torch.where(same_class, ious, torch.full_like(ious, -1.0))
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    # Stable sort: among equal scores the detection listed first matches first.
    for i in torch.argsort(scores, descending=True, stable=True).tolist():
        j = _best_unmatched(ious[i], taken, iou_thresh)
        if j >= 0:
            taken[j] = True
            outcome[i] = 1
    if crowd_boxes is not None and len(crowd_boxes) and len(boxes):
        inside = pairwise_ioa(Boxes(crowd_boxes), Boxes(boxes))  # (C, N), over detection area
        inside = torch.where(crowd_classes[:, None] == classes[None, :], inside, 0.0)
        outcome[(outcome == 0) & (inside.max(dim=0).values >= iou_thresh)] = -1
    return outcome


def detection_curve(
    positive_scores: List[np.ndarray],
    positive_outcomes: List[np.ndarray],
    negative_scores: List[np.ndarray],
    num_objects: int,
) -> DetectionCurve:
    """The recall / false-alarm trade-off over every distinct score threshold.

    Args:
        positive_scores (list[ndarray]): per positive image, its detection scores.
        positive_outcomes (list[ndarray]): per positive image, :func:`match_detections`'s
            outcome of each detection (1 hit, 0 false positive, -1 ignored).
        negative_scores (list[ndarray]): per negative image, its detection scores (all false
            alarms).
        num_objects (int): ground-truth objects (crowd regions excluded) on the positives.

    Returns:
        DetectionCurve
    """
    pos_scores = np.concatenate([np.asarray(s, np.float64) for s in positive_scores] or [[]])
    outcomes = np.concatenate([np.asarray(o, np.int64) for o in positive_outcomes] or [[]])
    neg_scores = np.concatenate([np.asarray(s, np.float64) for s in negative_scores] or [[]])
    counted = outcomes >= 0
    scores = np.concatenate([pos_scores[counted], neg_scores])
    is_hit = np.concatenate([outcomes[counted] == 1, np.zeros(len(neg_scores), bool)])
    on_negative = np.concatenate([np.zeros(counted.sum(), bool), np.ones(len(neg_scores), bool)])

    order = np.argsort(-scores, kind="stable")
    scores, is_hit, on_negative = scores[order], is_hit[order], on_negative[order]
    # The last detection of each run of equal scores closes a curve point: equal scores pass
    # a threshold together.
    closes_point = np.append(scores[1:] != scores[:-1], True) if len(scores) else np.zeros(0, bool)
    hits = np.cumsum(is_hit)[closes_point]
    false_positives = np.cumsum(~is_hit)[closes_point]
    false_alarms = np.cumsum(on_negative)[closes_point]
    num_negative, num_images = len(negative_scores), len(positive_scores) + len(negative_scores)
    return DetectionCurve(
        thresholds=scores[closes_point],
        recall=_rate(hits, num_objects),
        fa_per_negative_image=_rate(false_alarms, num_negative),
        fp_per_image=_rate(false_positives, num_images),
        num_objects=num_objects,
        num_images=num_images,
        num_negative_images=num_negative,
    )


def _rate(counts: np.ndarray, total: int) -> np.ndarray:
    # No denominator, no rate: NaN (detectron2's "cannot be computed"), never a perfect 0.
    if total == 0:
        return np.full(len(counts), math.nan)
    return counts.astype(np.float64) / total


def false_alarms_at_recall(curve: DetectionCurve, recall: float):
    """False alarms per negative image at the highest threshold that reaches ``recall``.

    Args:
        curve (DetectionCurve)
        recall (float): the share of objects to find, in (0, 1].

    Returns:
        (float, float): false alarms per negative image, and the score threshold; both NaN
        when the detector never reaches that recall (never 0: "n/a", not "no false alarm").
    """
    # Compared as counts, so that float rounding cannot miss recall 0.9 of 10 objects.
    needed = math.ceil(recall * curve.num_objects - 1e-9)
    hits = np.round(curve.recall * curve.num_objects)
    reached = np.flatnonzero(hits >= needed)
    if curve.num_objects == 0 or len(reached) == 0:
        return math.nan, math.nan
    first = reached[0]
    return float(curve.fa_per_negative_image[first]), float(curve.thresholds[first])


def log_average_miss_rate(curve: DetectionCurve) -> float:
    """The Caltech pedestrian benchmark's log-average miss rate (MR^-2).

    The miss rate (1 - recall) at 9 false-positives-per-image values evenly spaced in log space
    over [1e-2, 1e0] (false positives counted on all test images), each read at the lowest
    threshold whose false positives per image do not exceed it (miss rate 1 where none does),
    averaged geometrically, each miss rate floored at 1e-10 (Caltech's code). Lower is better.

    On a small test set read it with the FROC: a detector that finds every object within one
    false positive per image has miss rate 0 at the last reference, floored at 1e-10, and that
    one point pulls the geometric mean down by a factor of about 10 ** (10 / 9), whatever the
    other eight say.

    Returns:
        float: in [0, 1]; NaN without objects.
    """
    if curve.num_objects == 0:
        return math.nan
    references = np.logspace(*np.log10(MISS_RATE_FPPI_RANGE), _MISS_RATE_POINTS)
    miss_rates = []
    for reference in references:
        # With a relative tolerance: logspace gives 0.09999999999999999 for 10^-1, which 1
        # false positive on 10 images must not miss.
        within = np.flatnonzero(curve.fp_per_image <= reference * (1 + 1e-9))
        miss_rates.append(1.0 - curve.recall[within[-1]] if len(within) else 1.0)
    return float(np.exp(np.mean(np.log(np.maximum(1e-10, miss_rates)))))
