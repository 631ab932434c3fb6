"""hnm_d2.evaluation.bootstrap: the alarms at matched recall recomputed per run and per draw of
test images, the comparison of two settings over the draws, and the test-set size estimate."""

import math

import numpy as np

from hnm_d2.evaluation import bootstrap

# Image 1 is positive, with two objects; images 2 and 3 are negative. Detections are COCO's
# (image id, XYWH box, score).
OBJECTS = [[0, 0, 10, 10], [20, 20, 10, 10]]
HITS_AND_A_MISS = [(1, [0, 0, 10, 10], 0.9), (1, [20, 20, 10, 10], 0.6), (1, [50, 50, 5, 5], 0.7)]
# At recall 1 the threshold is 0.6 (the second hit): two alarms on image 2, none on image 3.
ALARMS = [(2, [5, 5, 10, 10], 0.8), (2, [30, 30, 10, 10], 0.62), (3, [0, 0, 8, 8], 0.5)]


def images_of(detections, images=(1, 2, 3)):
    annotations = [{"image_id": 1, "bbox": box, "category_id": 0, "iscrowd": 0} for box in OBJECTS]
    results = [
        {"image_id": i, "bbox": box, "score": s, "category_id": 0} for i, box, s in detections
    ]
    return bootstrap.run_images(images, annotations, results)


def test_alarms_at_recall_follow_the_threshold_the_drawn_positives_set():
    images = images_of(HITS_AND_A_MISS + ALARMS)
    assert images.positive_ids == (1,) and images.negative_ids == (2, 3)
    everything = (np.array([0]), np.array([0, 1]))
    assert bootstrap.alarms_at_recall(images, *everything, recall=1.0) == 1.0  # 2 alarms / 2
    assert bootstrap.alarms_at_recall(images, *everything, recall=0.5) == 0.0  # threshold 0.9
    # The same negative image drawn twice counts twice.
    assert bootstrap.alarms_at_recall(images, np.array([0]), np.array([0, 0]), 1.0) == 2.0
    assert bootstrap.alarms_at_recall(images, np.array([0]), np.array([1, 1]), 1.0) == 0.0


def test_a_recall_never_reached_is_nan():
    images = images_of(HITS_AND_A_MISS[:1] + ALARMS)
    assert math.isnan(bootstrap.alarms_at_recall(images, np.array([0]), np.array([0, 1]), 1.0))


def test_identical_settings_tie_in_every_draw():
    runs = [images_of(HITS_AND_A_MISS + ALARMS)]
    result = bootstrap.compare(runs, runs, recall=1.0, resamples=50, seed=0)
    assert (result.ratio, result.low, result.high, result.fewer, result.draws) == (1, 1, 1, 0, 50)


def test_a_candidate_without_alarms_is_fewer_in_every_draw():
    alarms_everywhere = ALARMS[:2] + [(3, [0, 0, 8, 8], 0.95)]
    baseline = [images_of(HITS_AND_A_MISS + alarms_everywhere)]
    candidate = [images_of(HITS_AND_A_MISS)]
    result = bootstrap.compare(baseline, candidate, recall=1.0, resamples=50, seed=0)
    assert (result.baseline_rate, result.candidate_rate) == (1.5, 0.0)
    assert (result.ratio, result.low, result.high, result.fewer) == (0, 0, 0, 1)


def test_a_setting_is_the_mean_of_its_seeds():
    two = images_of(HITS_AND_A_MISS + ALARMS)
    none = images_of(HITS_AND_A_MISS)
    everything = (np.array([0]), np.array([0, 1]))
    assert bootstrap.setting_rate([two, none], *everything, recall=1.0) == 0.5


def test_negative_images_needed_to_show_a_halving():
    # (1.6449 + 0.8416)^2 * (0.04 + 0.02) / 0.02^2 = 927.4 image evaluations.
    assert bootstrap.negatives_needed_for_halving(0.04, seeds=1) == 928
    assert bootstrap.negatives_needed_for_halving(0.04, seeds=3) == 310
    assert bootstrap.negatives_needed_for_halving(0.0, seeds=3) == math.inf
