#!/usr/bin/env python
"""How sure is a difference in false alarms at matched recall? A paired bootstrap over test images.

Compares a candidate setting of benchmarks/accuracy.py with a baseline, both run on the
same seeds and evaluated on the same test set. A test set of 33 negative images and a handful
of alarms per run leaves the ratio of two settings' alarm rates wide open; this says how wide.

The method, shared with ``make demo``, is hnm_d2.evaluation.bootstrap's: each of
``--resamples`` draws takes the positive and the negative test images with replacement, the same
draw for every run of both settings (paired by image); each run's threshold at ``--recall`` is
found again on the drawn images, and each setting's false alarms per negative image are
averaged over its seeds. Printed: the candidate's rate over the baseline's on the test set
itself, the central 95% of that ratio over the draws, and the share of draws in which the
candidate makes fewer alarms.

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
import sys
from pathlib import Path
from typing import List

import numpy as np

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

from hnm_d2.evaluation.bootstrap import (  # noqa: E402
    Comparison,
    RunImages,
    alarms_at_recall,
    compare,
    negative_scores,
    negatives_needed_for_halving,
)
from hnm_d2.evaluation.bootstrap import run_images as split_by_test_image  # noqa: E402


def run_images(run: Run) -> RunImages:
    """``run``'s detections split by test image."""
    return split_by_test_image(run.files, run.objects, run.detections)


def _is_judged_object(run, detection, verdicts):
    match = best_match(run.files[detection["image_id"]], xyxy(detection["bbox"]), verdicts)
    return match is not None and match["verdict"] == "object"


def without_judged_objects(run: Run, images: RunImages, verdicts) -> RunImages:
    """``images`` without the detections on negative images that a person judged unannotated
    objects (the audited alarms)."""
    negatives = set(images.negative_ids)
    kept = [
        d
        for d in run.detections
        if d["image_id"] in negatives and not _is_judged_object(run, d, verdicts)
    ]
    return images._replace(negative_scores=negative_scores(images.negative_ids, kept))


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
