"""OHEM selection on hand-built tensors: RoIs (loss order, NMS by loss, B, reserved positives)
and RPN anchors (hardest negatives, the cap, negative images, the stock normaliser)."""

import pytest
import torch
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from hnm_d2.modeling.ohem import (
    keep_hardest_negatives,
    rpn_negative_quota,
    select_hard_rois,
)


def disjoint_boxes(n):
    """n boxes 10 px apart that do not overlap, shape (n, 4)."""
    x0 = torch.arange(n, dtype=torch.float32)[:, None] * 10
    return torch.cat([x0, torch.zeros_like(x0), x0 + 8, torch.full_like(x0, 8)], dim=1)


def select(losses, boxes=None, fg=None, batch_size=10, nms_thresh=0.7, min_pos=0.0):
    losses = torch.tensor(losses)
    boxes = disjoint_boxes(len(losses)) if boxes is None else boxes
    fg = torch.tensor([False] * len(losses) if fg is None else fg, dtype=torch.bool)
    return select_hard_rois(losses, boxes, fg, batch_size, nms_thresh, min_pos).tolist()


def test_rois_are_kept_by_decreasing_loss_up_to_b():
    assert select([0.1, 0.5, 0.3, 0.9, 0.2], batch_size=3) == [3, 1, 2]
    assert select([0.1, 0.5, 0.3], batch_size=10) == [1, 2, 0]


def test_a_roi_overlapping_a_harder_one_is_suppressed():
    boxes = disjoint_boxes(3)
    boxes[1] = boxes[0] + torch.tensor([0.0, 0.0, 0.0, 0.5])  # IoU 8*8 / (8*8.5) = 0.94
    assert select([0.8, 0.9, 0.1], boxes=boxes) == [1, 2]
    # Suppression needs IoU above the threshold; 1.0 disables it.
    assert select([0.8, 0.9, 0.1], boxes=boxes, nms_thresh=0.95) == [1, 0, 2]
    assert select([0.8, 0.9, 0.1], boxes=boxes, nms_thresh=1.0) == [1, 0, 2]


def test_min_positive_fraction_reserves_slots_for_the_hardest_positives():
    losses = [0.9, 0.8, 0.7, 0.6, 0.1, 0.3, 0.2]
    fg = [False, False, False, False, True, True, True]
    assert select(losses, fg=fg, batch_size=4) == [0, 1, 2, 3]
    # floor(0.5 * 4) = 2 slots: the two hardest positives (0.3, 0.2), then the hardest others.
    assert select(losses, fg=fg, batch_size=4, min_pos=0.5) == [0, 1, 5, 6]
    # Fewer positives than reserved slots: the rest go to the loss ranking.
    assert select(losses, fg=[False] * 6 + [True], batch_size=4, min_pos=0.5) == [0, 1, 2, 6]


def test_no_rois_gives_an_empty_selection():
    assert select([], boxes=torch.zeros(0, 4), fg=[]) == []


@pytest.mark.parametrize(
    "num_pos, batch_size, ratio, floor, expected",
    [
        (2, 256, 0.0, 0, 254),
        (2, 256, 3.0, 0, 6),
        (100, 256, 3.0, 0, 156),
        (300, 256, 0, 0, 0),
        # A negative image keeps the floor of hard negatives, not 3 * max(0, 1) = 3 anchors.
        (0, 256, 3.0, 64, 64),
        (2, 256, 3.0, 64, 64),
        (30, 256, 3.0, 64, 90),  # the ratio wins above the floor
        (250, 256, 3.0, 64, 6),  # never past the batch
    ],
)
def test_rpn_negative_quota(num_pos, batch_size, ratio, floor, expected):
    assert rpn_negative_quota(num_pos, batch_size, ratio, floor) == expected


def test_keep_hardest_negatives_ignores_the_others():
    labels = torch.tensor([1, 0, 0, -1, 0, 0])
    losses = torch.tensor([9.0, 0.1, 0.9, 5.0, 0.5, 0.7])
    assert keep_hardest_negatives(labels, losses, 2).tolist() == [1, -1, 0, -1, -1, 0]
    assert keep_hardest_negatives(labels, losses, 10).tolist() == [1, 0, 0, -1, 0, 0]
    assert labels.tolist() == [1, 0, 0, -1, 0, 0]  # the input is left alone


def rpn_losses(rpn, logits, labels):
    """RPN losses for N images of A anchors: logits (N, A), labels (N, A)."""
    num_images, num_anchors = logits.shape
    anchors = [Boxes(disjoint_boxes(num_anchors))]
    deltas = [torch.zeros(num_images, num_anchors, 4)]
    gt_boxes = [disjoint_boxes(num_anchors)] * num_images
    with EventStorage() as storage:
        losses = rpn.losses(anchors, [logits], list(labels), deltas, gt_boxes)
    return losses, storage


def test_rpn_ohem_trains_on_the_hardest_negatives_with_the_stock_normaliser(tiny_rpn):
    rpn = tiny_rpn(ohem_enabled=True, ohem_neg_pos_ratio=2.0, ohem_min_negatives=2)
    logits = torch.tensor(
        [
            [2.0, -1.0, 3.0, 0.5, -2.0, 1.0],  # 1 positive: keep 2 negatives (3.0, 1.0)
            [0.0, -1.0, 3.0, 0.5, -2.0, 1.0],  # negative image: the floor, 2 (3.0, 1.0)
        ]
    )
    labels = torch.tensor([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    losses, storage = rpn_losses(rpn, logits, labels)

    kept = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 1, 0, 0, 1]], dtype=torch.bool)
    targets = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0.0] * 6])
    expected = F.binary_cross_entropy_with_logits(logits[kept], targets[kept], reduction="sum")
    torch.testing.assert_close(losses["loss_rpn_cls"], expected / (8 * 2))
    assert storage.history("hnm/rpn_ohem_neg").latest() == 2


def test_rpn_ohem_subsampling_keeps_every_negative_and_stock_positives(tiny_rpn):
    labels = torch.tensor([1] * 10 + [0] * 20 + [-1] * 5)
    torch.manual_seed(0)
    stock = tiny_rpn()._subsample_labels(labels.clone())
    torch.manual_seed(0)
    ohem = tiny_rpn(ohem_enabled=True)._subsample_labels(labels.clone())
    assert torch.equal(ohem == 1, stock == 1)  # the stock random positives: 0.5 * 8 = 4
    assert int((ohem == 1).sum()) == 4
    assert torch.equal(ohem == 0, labels == 0)  # every negative is a candidate
