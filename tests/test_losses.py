"""Background down-weighting and focal loss: only background terms scale, the normalisers stay
the stock ones, gamma 0 is the cross-entropy, and OHEM's per-RoI loss adds up to the stock
loss."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch.nn import functional as F

from hnm_d2.modeling import HNMFastRCNNOutputLayers
from hnm_d2.modeling.losses import (
    background_weights,
    objectness_losses,
    roi_classification_losses,
    softmax_focal_loss,
)

NUM_CLASSES = 2  # labels 0, 1 foreground, 2 background


def logits_and_labels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, NUM_CLASSES + 1, generator=generator)
    return logits, torch.tensor([0, 2, 1, 2, 2, 0])


def test_background_weights():
    labels = torch.tensor([0, 2, 1, 2])
    assert background_weights(labels, 2, 0.25).tolist() == [1.0, 0.25, 1.0, 0.25]


def test_background_weight_scales_only_background_terms():
    logits, labels = logits_and_labels()
    by_hand = -torch.log_softmax(logits, dim=1)[torch.arange(6), labels]
    by_hand = by_hand * torch.tensor([1.0, 0.3, 1.0, 0.3, 0.3, 1.0])
    torch.testing.assert_close(roi_classification_losses(logits, labels, 0.3), by_hand)


def test_focal_loss_with_gamma_0_is_the_cross_entropy():
    logits, labels = logits_and_labels()
    torch.testing.assert_close(
        softmax_focal_loss(logits, labels, 0.0), F.cross_entropy(logits, labels, reduction="none")
    )


def test_focal_loss_by_hand():
    logits, labels = logits_and_labels()
    p_t = torch.softmax(logits, dim=1)[torch.arange(6), labels]
    torch.testing.assert_close(
        softmax_focal_loss(logits, labels, 2.0), -((1 - p_t) ** 2) * torch.log(p_t)
    )


def test_objectness_background_weight():
    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 0])
    by_hand = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    torch.testing.assert_close(
        objectness_losses(logits, labels, 0.5), by_hand * torch.tensor([1.0, 0.5, 0.5])
    )


def predictor(cls=HNMFastRCNNOutputLayers, **kwargs):
    torch.manual_seed(0)
    return cls(
        input_shape=ShapeSpec(channels=8),
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=NUM_CLASSES,
        smooth_l1_beta=0.5,
        **kwargs,
    )


def roi_batch():
    """Predictions and proposals of two images: one with objects, one negative."""
    logits, labels = logits_and_labels()
    deltas = torch.randn(6, NUM_CLASSES * 4, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 30, 30], [20, 20, 40, 44]]).float()
    with_objects = Instances((64, 64), proposal_boxes=Boxes(boxes), gt_classes=labels[:3])
    with_objects.gt_boxes = Boxes(boxes + torch.tensor([1.0, -1.0, 2.0, 0.0]))
    negative = Instances((64, 64), proposal_boxes=Boxes(boxes + 3), gt_classes=labels[3:])
    # A negative image's proposals are all background: the fixture's labels 2, 2, 0 -> 2.
    negative.gt_classes = torch.full((3,), NUM_CLASSES)
    return (logits, deltas), [with_objects, negative]


def losses_of(module):
    predictions, proposals = roi_batch()
    with EventStorage():
        return module.losses(predictions, proposals)


def test_neutral_predictor_returns_the_stock_losses_to_the_bit():
    stock = losses_of(predictor(cls=FastRCNNOutputLayers))
    for key, value in losses_of(predictor()).items():
        assert torch.equal(value, stock[key]), key


@pytest.mark.parametrize("loss_weight", [1.0, {"loss_cls": 2.0, "loss_box_reg": 3.0}])
def test_predictor_background_weight_keeps_the_number_of_rois_as_normaliser(loss_weight):
    hnm = losses_of(predictor(bg_weight=0.25, loss_weight=loss_weight))
    stock = losses_of(predictor(cls=FastRCNNOutputLayers, loss_weight=loss_weight))
    (logits, _), proposals = roi_batch()
    labels = torch.cat([p.gt_classes for p in proposals])
    weights = torch.where(labels == NUM_CLASSES, 0.25, 1.0)
    per_roi = F.cross_entropy(logits, labels, reduction="none")
    cls_weight = 2.0 if isinstance(loss_weight, dict) else 1.0
    torch.testing.assert_close(hnm["loss_cls"], (weights * per_roi).sum() / 6 * cls_weight)
    assert torch.equal(hnm["loss_box_reg"], stock["loss_box_reg"])


def test_focal_with_gamma_0_matches_the_stock_cross_entropy():
    hnm = losses_of(predictor(focal_gamma=0.0))
    stock = losses_of(predictor(cls=FastRCNNOutputLayers))
    torch.testing.assert_close(hnm["loss_cls"], stock["loss_cls"])


@pytest.mark.parametrize("options", [{}, {"bg_weight": 0.5, "focal_gamma": 1.0}])
def test_per_roi_losses_add_up_to_the_predictor_losses(options):
    module = predictor(loss_weight={"loss_cls": 1.5, "loss_box_reg": 2.0}, **options)
    predictions, proposals = roi_batch()
    losses = losses_of(module)
    per_roi = module.per_roi_losses(predictions, proposals)
    assert per_roi.shape == (6,)
    torch.testing.assert_close(per_roi.sum() / 6, losses["loss_cls"] + losses["loss_box_reg"])


def rpn_objectness_losses(rpn, logits, labels):
    """rpn.losses() of N images of A anchors (logits, labels: (N, A)). Anchors, deltas and gt
    boxes are placeholders: only objectness is checked."""
    num_images, num_anchors = logits.shape
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]]).repeat(num_anchors, 1)
    deltas = [torch.zeros(num_images, num_anchors, 4)]
    with EventStorage():
        return rpn.losses([Boxes(boxes)], [logits], list(labels), deltas, [boxes] * num_images)


def test_rpn_background_weight_keeps_the_stock_normaliser(tiny_rpn):
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5], [0.0, -1.0, 3.0, 0.5]])
    labels = torch.tensor([[1, 0, -1, 0], [0, 0, 0, -1]])
    stock = rpn_objectness_losses(tiny_rpn(), logits, labels)
    weighted = rpn_objectness_losses(tiny_rpn(bg_weight=0.5), logits, labels)
    neutral = rpn_objectness_losses(tiny_rpn(bg_weight=1.0), logits, labels)

    valid = labels >= 0
    per_anchor = F.binary_cross_entropy_with_logits(
        logits[valid], labels[valid].float(), reduction="none"
    )
    weights = torch.where(labels[valid] == 0, 0.5, 1.0)
    # Divided by 8 sampled anchors per image times 2 images, whatever the weights.
    torch.testing.assert_close(weighted["loss_rpn_cls"], (weights * per_anchor).sum() / (8 * 2))
    assert torch.equal(weighted["loss_rpn_loc"], stock["loss_rpn_loc"])
    assert torch.equal(neutral["loss_rpn_cls"], stock["loss_rpn_cls"])


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.999])
def test_focal_loss_gradients_stay_finite_below_gamma_1_on_saturated_scores(gamma):
    # Logits so confident that p_t rounds to 1 in float32: 1 - p_t is 0 there.
    logits = torch.tensor([[40.0, -40.0], [-40.0, 40.0], [0.3, -0.2]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    loss = softmax_focal_loss(logits, labels, gamma).sum()
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all(), grad
    # Saturated rows give ~0 loss and gradient; the uncertain row still trains.
    assert grad[:2].abs().max() < 1e-6 and grad[2].abs().sum() > 0.1
