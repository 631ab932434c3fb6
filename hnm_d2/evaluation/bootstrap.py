"""How sure is a difference in false alarms at matched recall? A paired bootstrap over test images.

Two settings (a baseline and a candidate), each run on one or more seeds and evaluated on the
same test set. Each of ``resamples`` draws takes the positive and the negative test images with
replacement (separately, so each draw has as many of either as the test set), the same draw for
every run of both settings: the comparison stays paired by image. On the drawn images each
run's score threshold at ``recall`` is found again from its detections (the evaluator's rule,
so the threshold moves with the positives drawn), its false alarms per negative image are
counted, and each setting's are averaged over its seeds. :func:`compare` returns the
candidate's rate over the baseline's on the test set itself, the central 95% of that ratio over
the draws, and the share of draws in which the candidate makes fewer alarms. The draws vary the
test images only; the seeds' spread enters through the mean over seeds, not as a second draw.

Used by ``make demo`` (:mod:`hnm_d2.demo`) and by benchmarks/paired_bootstrap.py, which reads
benchmark run directories and also recounts with audited verdicts.
"""

import json
import math
from statistics import NormalDist
from typing import Iterable, List, NamedTuple

import numpy as np
import torch
from detectron2.structures import BoxMode

from .negative_evaluator import ground_truth
from .operating_point import detection_curve, false_alarms_at_recall, match_detections

__all__ = [
    "RunImages",
    "run_images",
    "load_run_images",
    "negative_scores",
    "alarms_at_recall",
    "setting_rate",
    "Comparison",
    "compare",
    "negatives_needed_for_halving",
]

# The sample-size estimate's one-sided 5% level and 80% power, as standard normal quantiles.
Z_LEVEL, Z_POWER = NormalDist().inv_cdf(0.95), NormalDist().inv_cdf(0.80)


class RunImages(NamedTuple):
    """One run's detections, image by image, in the order of the test set's image ids.

    Attributes:
        positive_ids, negative_ids (tuple[int]): the test images, in that order.
        positive_scores, positive_outcomes (list[ndarray]): per positive image, its detections'
            scores and match outcomes (1 hit, 0 false positive, -1 ignored, as
            :func:`match_detections`).
        objects (ndarray): per positive image, its objects that count (crowd regions excluded).
        negative_scores (list[ndarray]): per negative image, its detections' scores.
    """

    positive_ids: tuple
    negative_ids: tuple
    positive_scores: List[np.ndarray]
    positive_outcomes: List[np.ndarray]
    objects: np.ndarray
    negative_scores: List[np.ndarray]


def _xyxy(xywh):
    return BoxMode.convert(list(xywh), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)


def _positive_image(detections, annotations):
    """(scores, outcomes, objects that count) of one positive image, matched as the evaluator
    matches: its ground truth read from the COCO annotations as from a dataset record."""
    record = {"annotations": [{**a, "bbox_mode": BoxMode.XYWH_ABS} for a in annotations]}
    truth = ground_truth(record)
    scores = np.array([d["score"] for d in detections])
    outcomes = match_detections(
        torch.tensor([_xyxy(d["bbox"]) for d in detections], dtype=torch.float32).reshape(-1, 4),
        torch.from_numpy(scores),
        torch.tensor([d["category_id"] for d in detections], dtype=torch.int64),
        *truth,
    )
    return scores, outcomes.numpy(), len(truth.boxes)


def negative_scores(negative_ids, detections) -> List[np.ndarray]:
    """Per negative image (in the order of ``negative_ids``), the scores of ``detections``
    (COCO results) on it."""
    by_image = {image_id: [] for image_id in negative_ids}
    for detection in detections:
        if detection["image_id"] in by_image:
            by_image[detection["image_id"]].append(detection["score"])
    return [np.array(by_image[i]) for i in negative_ids]


def run_images(image_ids: Iterable[int], annotations: List[dict], detections: List[dict]):
    """One run's detections split by test image.

    Args:
        image_ids: every test image's id.
        annotations: the test set's COCO annotations (image_id, XYWH bbox, category_id,
            iscrowd); an image without any is a negative image.
        detections: the run's detections as COCO results (image_id, XYWH bbox, score,
            category_id in the annotations' ids), as detectron2's COCOEvaluator writes them to
            coco_instances_results.json.

    Returns:
        RunImages
    """
    image_ids = set(image_ids)
    by_image = {image_id: [] for image_id in image_ids}
    for detection in detections:
        by_image[detection["image_id"]].append(detection)
    objects = {image_id: [] for image_id in image_ids}
    for annotation in annotations:
        objects[annotation["image_id"]].append(annotation)
    positive_ids = tuple(sorted(i for i in image_ids if objects[i]))
    negative_ids = tuple(sorted(i for i in image_ids if not objects[i]))
    positives = [_positive_image(by_image[i], objects[i]) for i in positive_ids]
    return RunImages(
        positive_ids,
        negative_ids,
        [p[0] for p in positives],
        [p[1] for p in positives],
        np.array([p[2] for p in positives], dtype=np.int64),
        negative_scores(negative_ids, detections),
    )


def load_run_images(test_json: str, detections_json: str) -> RunImages:
    """:func:`run_images` of a test set's COCO file and a run's coco_instances_results.json."""
    with open(test_json) as f:
        coco = json.load(f)
    with open(detections_json) as f:
        detections = json.load(f)
    image_ids = [image["id"] for image in coco["images"]]
    return run_images(image_ids, coco.get("annotations", []), detections)


def alarms_at_recall(images: RunImages, positive_draw, negative_draw, recall):
    """False alarms per negative image at ``recall`` on the drawn images (index arrays);
    NaN where the recall is not reached."""
    curve = detection_curve(
        [images.positive_scores[i] for i in positive_draw],
        [images.positive_outcomes[i] for i in positive_draw],
        [images.negative_scores[i] for i in negative_draw],
        int(images.objects[positive_draw].sum()),
    )
    return false_alarms_at_recall(curve, recall)[0]


def setting_rate(runs: List[RunImages], positive_draw, negative_draw, recall):
    """A setting's false alarms per negative image at ``recall``, the mean over its seeds."""
    return float(np.mean([alarms_at_recall(r, positive_draw, negative_draw, recall) for r in runs]))


class Comparison(NamedTuple):
    """Candidate over baseline: ``ratio`` and the rates on the test set itself, ``low`` and
    ``high`` the central 95% of the ratio over the draws, ``fewer`` the share of draws in
    which the candidate has fewer alarms, ``draws`` the draws in which both settings reach the
    recall on every seed (the others are left out)."""

    baseline_rate: float
    candidate_rate: float
    ratio: float
    low: float
    high: float
    fewer: float
    draws: int


def _ratio(candidate, baseline):
    # A baseline without alarms leaves no ratio unless the candidate has none either.
    if baseline == 0:
        return 1.0 if candidate == 0 else math.inf
    return candidate / baseline


def compare(
    baseline: List[RunImages], candidate: List[RunImages], recall, resamples, seed
) -> Comparison:
    """The paired bootstrap of the module docstring.

    Args:
        baseline, candidate: each setting's runs (one per seed), on the same test images.
        recall (float): the matched recall, in (0, 1].
        resamples (int): the draws.
        seed (int): the seed of the draws.
    """
    num_positive, num_negative = len(baseline[0].objects), len(baseline[0].negative_scores)
    everything = (np.arange(num_positive), np.arange(num_negative))
    base = setting_rate(baseline, *everything, recall)
    cand = setting_rate(candidate, *everything, recall)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(resamples):
        draw = (
            rng.integers(num_positive, size=num_positive),
            rng.integers(num_negative, size=num_negative),
        )
        pairs.append([setting_rate(runs, *draw, recall) for runs in (baseline, candidate)])
    pairs = np.array([p for p in pairs if not np.isnan(p).any()]).reshape(-1, 2)
    ratios = [_ratio(c, b) for b, c in pairs]
    # "nearest": a ratio may be infinite (a draw where only the candidate has alarms).
    low, high = (
        np.percentile(ratios, [2.5, 97.5], method="nearest") if ratios else (math.nan, math.nan)
    )
    fewer = float(np.mean(pairs[:, 1] < pairs[:, 0])) if len(pairs) else math.nan
    return Comparison(base, cand, _ratio(cand, base), float(low), float(high), fewer, len(pairs))


def negatives_needed_for_halving(rate, seeds):
    """Negative test images for a one-sided test of a Poisson rate ``rate`` against
    ``rate / 2`` (per image and seed), at Z_LEVEL and Z_POWER, with ``seeds`` runs per
    setting; infinite for a rate of 0.

    Treats each image and seed as an independent Poisson count: a lower bound, since the same
    image's alarms agree across seeds.
    """
    if rate <= 0:
        return math.inf
    halved = rate / 2
    evaluations = (Z_LEVEL + Z_POWER) ** 2 * (rate + halved) / (rate - halved) ** 2
    return math.ceil(evaluations / seeds)
