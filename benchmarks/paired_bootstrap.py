#!/usr/bin/env python
"""How sure is a difference in false alarms at matched recall? A paired bootstrap over test images.

Compares a candidate setting of benchmarks/accuracy.py with a baseline, both run on the
same seeds and evaluated on the same test set. A test set of 33 negative images and a handful
of alarms per run leaves the ratio of two settings' alarm rates wide open; this says how wide.

Each of ``--resamples`` draws takes the positive and the negative test images with replacement
(separately, so each draw has as many of either as the test set), the same draw for every run
of both settings: the comparison stays paired by image. On the drawn images each run's score
threshold at ``--recall`` is found again from its detections (the evaluator's rule, so the
threshold moves with the positives drawn), its false alarms per negative image are counted,
and each setting's are averaged over its seeds. Printed: the candidate's rate over the
baseline's on the test set itself, the central 95% of that ratio over the draws, and the share
of draws in which the candidate makes fewer alarms. The draws vary the test images only; the
seeds' spread enters through the mean over seeds, not as a second draw.

With ``--verdicts`` (benchmarks/negative_audit.py) the same for the audited alarms: detections
on a negative image that a person judged an unannotated object are not counted. The verdicts
cover the alarms of the test set itself; one a draw's lower threshold lets through unjudged
counts as false.

Last, the negative test images a test set would need for a one-sided test (5% level, 80%
power) to tell a halving of the baseline's rate from none, treating each image and seed as an
independent Poisson count: a lower bound, since the same image's alarms agree across seeds.

    .venv/bin/python benchmarks/paired_bootstrap.py \
        --baseline output/bench/bccd_test/stock_negatives_filtered_seed{0,1,2} \
        --candidate output/bench_audited/bccd_test/negatives_kept_seed{0,1,2} \
        --verdicts benchmarks/audits/bccd_test_negatives.json
"""

import argparse
import math
import sys
from pathlib import Path
from statistics import NormalDist
from typing import List, NamedTuple

import numpy as np
import torch
from detectron2.structures import BoxMode

# hnm_d2 from this checkout, and negative_audit beside this script also when it is imported
# from elsewhere (its tests).
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from negative_audit import (  # noqa: E402
    Run,
    best_match,
    check_against_evaluator,
    load_verdicts,
    xyxy,
)

from hnm_d2.evaluation.negative_evaluator import ground_truth  # noqa: E402
from hnm_d2.evaluation.operating_point import (  # noqa: E402
    detection_curve,
    false_alarms_at_recall,
    match_detections,
)

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


def _positive_image(detections, annotations):
    """(scores, outcomes, objects that count) of one positive image, matched as the evaluator
    matches: its ground truth read from the COCO annotations as from a dataset record."""
    record = {"annotations": [{**a, "bbox_mode": BoxMode.XYWH_ABS} for a in annotations]}
    truth = ground_truth(record)
    scores = np.array([d["score"] for d in detections])
    outcomes = match_detections(
        torch.tensor([xyxy(d["bbox"]) for d in detections], dtype=torch.float32).reshape(-1, 4),
        torch.from_numpy(scores),
        torch.tensor([d["category_id"] for d in detections], dtype=torch.int64),
        *truth,
    )
    return scores, outcomes.numpy(), len(truth.boxes)


def _is_judged_object(run, detection, verdicts):
    match = best_match(run.files[detection["image_id"]], xyxy(detection["bbox"]), verdicts)
    return match is not None and match["verdict"] == "object"


def _negative_scores(run, negative_ids, verdicts=()):
    """Per negative image, the scores of its detections but those ``verdicts`` judge objects."""
    by_image = {image_id: [] for image_id in negative_ids}
    for detection in run.detections:
        if detection["image_id"] in by_image and not _is_judged_object(run, detection, verdicts):
            by_image[detection["image_id"]].append(detection["score"])
    return [np.array(by_image[i]) for i in negative_ids]


def run_images(run: Run) -> RunImages:
    """``run``'s detections split by test image."""
    by_image = {image_id: [] for image_id in run.files}
    for detection in run.detections:
        by_image[detection["image_id"]].append(detection)
    annotations = {image_id: [] for image_id in run.files}
    for annotation in run.objects:
        annotations[annotation["image_id"]].append(annotation)
    positive_ids = tuple(sorted(set(run.files) - run.negative_ids))
    negative_ids = tuple(sorted(run.negative_ids))
    positives = [_positive_image(by_image[i], annotations[i]) for i in positive_ids]
    return RunImages(
        positive_ids,
        negative_ids,
        [p[0] for p in positives],
        [p[1] for p in positives],
        np.array([p[2] for p in positives], dtype=np.int64),
        _negative_scores(run, negative_ids),
    )


def without_judged_objects(run: Run, images: RunImages, verdicts) -> RunImages:
    """``images`` without the detections on negative images that a person judged unannotated
    objects (the audited alarms)."""
    return images._replace(negative_scores=_negative_scores(run, images.negative_ids, verdicts))


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


def compare(baseline: List[RunImages], candidate: List[RunImages], recall, resamples, seed):
    """The paired bootstrap of the module docstring."""
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
    setting; infinite for a rate of 0."""
    if rate <= 0:
        return math.inf
    halved = rate / 2
    evaluations = (Z_LEVEL + Z_POWER) ** 2 * (rate + halved) / (rate - halved) ** 2
    return math.ceil(evaluations / seeds)


def load_setting(run_dirs, recall, test_json):
    """The runs of one setting, (Run, RunImages) each, checked against their own evaluation."""
    setting = []
    for run_dir in run_dirs:
        run = Run.from_run_dir(Path(run_dir), test_json)
        images = run_images(run)
        everything = (np.arange(len(images.objects)), np.arange(len(images.negative_scores)))
        check_against_evaluator(run, recall, alarms_at_recall(images, *everything, recall))
        setting.append((run, images))
    return setting


def check_same_test_set(run_dirs, runs: List[RunImages]):
    """Paired draws need the same images in every run."""
    for run_dir, images in zip(run_dirs, runs):
        if images[:2] != runs[0][:2]:
            raise SystemExit(
                f"{run_dir}: evaluated on other test images than {run_dirs[0]} (image ids of "
                "its positive or negative images differ); compare runs of one test set"
            )


def report(label, comparison: Comparison, seeds):
    c = comparison
    print(
        f"| {label} | {c.baseline_rate:.3f} | {c.candidate_rate:.3f} | {c.ratio:.2f} "
        f"| {c.low:.2f} to {c.high:.2f} | {c.fewer:.2f} | {c.draws} "
        f"| {negatives_needed_for_halving(c.baseline_rate, seeds)} |"
    )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", nargs="+", required=True, help="run directories, a seed each")
    parser.add_argument(
        "--candidate", nargs="+", required=True, help="run directories, a seed each"
    )
    parser.add_argument("--recall", type=float, default=0.9)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="of the draws")
    parser.add_argument("--verdicts", help="a verdicts file: also compare the audited alarms")
    parser.add_argument("--test-json", type=Path, help="the test set's COCO file, if it has one")
    return parser.parse_args()


def main():
    args = parse_args()
    if len(args.baseline) != len(args.candidate):
        raise SystemExit(
            f"--baseline has {len(args.baseline)} runs and --candidate {len(args.candidate)}: "
            "give both settings the same seeds"
        )
    loaded = [
        load_setting(dirs, args.recall, args.test_json) for dirs in (args.baseline, args.candidate)
    ]
    check_same_test_set(
        args.baseline + args.candidate, [images for setting in loaded for _, images in setting]
    )
    variants = {"all alarms": [[images for _, images in setting] for setting in loaded]}
    if args.verdicts:
        verdicts = load_verdicts(args.verdicts)
        variants["audited alarms"] = [
            [without_judged_objects(run, images, verdicts) for run, images in setting]
            for setting in loaded
        ]
    print(f"false alarms per negative image at recall {args.recall:g}, {args.resamples} draws")
    print(
        "| alarms | baseline | candidate | ratio | 95% of draws | share of draws fewer | draws "
        "| negative images to show a halving |"
    )
    print("|---" * 8 + "|")
    for label, (baseline, candidate) in variants.items():
        comparison = compare(baseline, candidate, args.recall, args.resamples, args.seed)
        report(label, comparison, len(args.baseline))


if __name__ == "__main__":
    main()
