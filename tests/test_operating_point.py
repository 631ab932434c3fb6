"""False alarms at matched recall, MR^-2 and the FROC curve, against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from hnm_d2.evaluation.froc import load_curve, plot_froc, save_curve
from hnm_d2.evaluation.operating_point import (
    detection_curve,
    false_alarms_at_recall,
    log_average_miss_rate,
    match_detections,
)


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def test_matching_is_greedy_by_score_within_the_class_and_ignores_crowd_regions():
    gt = boxes([0, 0, 10, 10], [20, 20, 30, 30])
    detections = boxes(
        [0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30], [52, 52, 58, 58], [52, 52, 58, 58]
    )
    scores = torch.tensor([0.5, 0.9, 0.8, 0.7, 0.6])
    classes = torch.tensor([0, 0, 1, 0, 1])
    crowd, crowd_classes = boxes([40, 40, 80, 80]), torch.tensor([0])
    outcome = match_detections(
        detections, scores, classes, gt, torch.tensor([0, 0]), crowd, crowd_classes
    )
    # The 0.9 detection takes the first object although the 0.5 one overlaps it exactly; the
    # 0.5 one is a duplicate (false positive); class 1 finds no class-0 object. The small box
    # inside the class-0 crowd region (IoU 0.0225, but all of its area inside) is ignored;
    # the same box of class 1 is not (COCO matches crowd regions within the class).
    assert outcome.tolist() == [0, 1, 0, -1, 0]


def test_no_ground_truth_makes_every_detection_a_false_positive():
    outcome = match_detections(
        boxes([0, 0, 5, 5]), torch.tensor([0.3]), torch.tensor([0]), boxes(), torch.tensor([])
    )
    assert outcome.tolist() == [0]


@pytest.fixture
def curve():
    """2 positive images with 4 objects and 9 negative images (11 images):
    image A: hits at 0.9 and 0.5; image B: a hit at 0.7 and a false positive at 0.3 (3 of the 4
    objects are found); negatives: false alarms at 0.8 and 0.4.

    By hand, over distinct scores (hits, false positives, alarms on negatives):
        0.9 (1, 0, 0)  0.8 (1, 1, 1)  0.7 (2, 1, 1)  0.5 (3, 1, 1)  0.4 (3, 2, 2)  0.3 (3, 3, 2)
    """
    positive_scores = [np.array([0.9, 0.5]), np.array([0.7, 0.3])]
    positive_outcomes = [np.array([1, 1]), np.array([1, 0])]
    negative_scores = [np.array([0.8])] + [np.array([])] * 7 + [np.array([0.4])]
    return detection_curve(positive_scores, positive_outcomes, negative_scores, num_objects=4)


def test_detection_curve_by_hand(curve):
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8, 0.7, 0.5, 0.4, 0.3])
    np.testing.assert_allclose(curve.recall, [0.25, 0.25, 0.5, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(curve.fa_per_negative_image, np.array([0, 1, 1, 1, 2, 2]) / 9)
    np.testing.assert_allclose(curve.fp_per_image, np.array([0, 1, 1, 1, 2, 3]) / 11)


@pytest.mark.parametrize(
    "recall, expected",
    [
        (0.25, (0.0, 0.9)),  # found at the top score, before any alarm
        (0.5, (1 / 9, 0.7)),  # the 0.8 alarm passes the 0.7 threshold
        (0.75, (1 / 9, 0.5)),
        (0.7, (1 / 9, 0.5)),  # 0.7 of 4 objects needs 3 hits
    ],
)
def test_false_alarms_at_recall_by_hand(curve, recall, expected):
    assert false_alarms_at_recall(curve, recall) == pytest.approx(expected)


def test_a_recall_never_reached_is_nan_not_zero(curve):
    false_alarms, threshold = false_alarms_at_recall(curve, 0.9)  # 4 of 4 are never found
    assert math.isnan(false_alarms) and math.isnan(threshold)


@pytest.mark.parametrize("alarms", [[0.6, 0.59], [0.59, 0.6]])
def test_tied_scores_pass_a_threshold_together(alarms):
    # The one object is found at 0.6 and a false alarm has exactly that score: reaching recall
    # 1 lets it through (1 alarm on the 1 negative image), in whichever order they come.
    curve = detection_curve([np.array([0.6])], [np.array([1])], [np.array(alarms)], 1)
    assert false_alarms_at_recall(curve, 1.0) == pytest.approx((1.0, 0.6))


def test_log_average_miss_rate_by_hand(curve):
    # References 10^(-2 + k/4), k = 0..8. False positives per image step by 1/11 = 0.091:
    # below it (0.01, 0.018, 0.032, 0.056) the last point within is the top one, miss rate
    # 1 - 0.25; from 0.1 to 0.178 the 0.5 point (miss rate 0.25); from 0.316 on the 0.3 point
    # (2 or 3 false positives per 11 images, miss rate 0.25).
    expected = math.exp((4 * math.log(0.75) + 5 * math.log(0.25)) / 9)
    assert log_average_miss_rate(curve) == pytest.approx(expected)


def test_a_reference_hit_exactly_counts_despite_float_rounding():
    # 10 images, 1 false positive (0.9) before the only object (0.8): at 1e-1 false positives
    # per image (logspace's 0.09999999999999999) the object is found, miss rate 0 (1e-10).
    curve = detection_curve(
        [np.array([0.9, 0.8])] + [np.array([])] * 9,
        [np.array([0, 1])] + [np.array([])] * 9,
        [],
        num_objects=1,
    )
    # References 0.01 .. 0.056: nothing within, miss rate 1; from 0.1 on: miss rate 0.
    assert log_average_miss_rate(curve) == pytest.approx(math.exp(5 * math.log(1e-10) / 9))


def test_miss_rate_is_1_where_no_threshold_stays_under_the_reference():
    # Every detection is a false positive first: 1 per image at the top score.
    curve = detection_curve(
        [np.array([0.9, 0.1])], [np.array([0, 1])], [np.array([0.95])], num_objects=1
    )
    # FPPI: 0.5 at 0.95, 1.0 at 0.9, 1.0 at 0.1 (recall 1): miss 1 below 0.5, then 1 until
    # 1.0, where recall is 1 (miss 0, floored at 1e-10).
    expected = math.exp(8 * math.log(1.0) / 9 + math.log(1e-10) / 9)
    assert log_average_miss_rate(curve) == pytest.approx(expected)


def test_no_detection_at_all_gives_nan_recall_rates_but_a_curve():
    curve = detection_curve([np.array([])], [np.array([])], [np.array([])], num_objects=2)
    assert len(curve.thresholds) == 0
    assert all(math.isnan(v) for v in false_alarms_at_recall(curve, 0.5))
    assert log_average_miss_rate(curve) == pytest.approx(1.0)


def test_curve_round_trips_through_json_and_plots(curve, tmp_path):
    save_curve(curve, str(tmp_path / "froc.json"))
    restored = load_curve(str(tmp_path / "froc.json"))
    for a, b in zip(curve, restored):
        np.testing.assert_array_equal(a, b)
    plot_froc({"model": curve, "again": restored}, str(tmp_path / "froc.png"))
    assert (tmp_path / "froc.png").stat().st_size > 5000


def test_one_reference_with_every_object_found_dominates_the_geometric_mean():
    # Miss rates 0.9 at 8 references and 0 (floored at 1e-10) at the last one: the mean of
    # the logs is pulled to (8 log 0.9 + log 1e-10) / 9, an MR^-2 of 0.07 although the
    # detector misses 90% of the objects at 8 of the 9 references.
    hit_first = detection_curve(
        [np.array([0.9] + [0.5] * 9)], [np.array([1] + [0] * 9)], [], num_objects=10
    )
    # Recall 0.1 before any false positive, and never more: miss rate 0.9 at every reference.
    assert log_average_miss_rate(hit_first) == pytest.approx(0.9)
    rest = [np.array([0.4])] * 9  # the other 9 objects, each found below the false positives
    found_late = detection_curve(
        [np.array([0.9] + [0.5] * 9)] + rest,
        [np.array([1] + [0] * 9)] + [np.array([1])] * 9,
        [],
        num_objects=10,
    )  # 10 images, 9 false positives: 0.9 per image, under the last reference (1.0)
    expected = math.exp((8 * math.log(0.9) + math.log(1e-10)) / 9)
    assert log_average_miss_rate(found_late) == pytest.approx(expected)
