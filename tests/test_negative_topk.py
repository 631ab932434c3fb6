"""The negative-image top-k loss (MODEL.HNM.NEGATIVE_IMAGE_LOSS): it adds loss_neg_topk and
changes no stock loss, trains on the TOP_K highest-scored of all proposals of the images without
objects (and of no other image), lowers their object scores, is 0 (in the graph) without a
negative image, and refuses what it cannot do, naming the key."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from test_heads import (
    assert_same_losses,
    grid_proposals,
    instances,
    random_features,
    rpn_like_proposals,
    seeded_losses,
    seeded_model,
    stock_losses,  # noqa: F401  (a fixture)
    tiny_cfg,
)
from torch.nn import functional as F

from hnm_d2.config import HNMConfigError
from hnm_d2.modeling import HNMROIHeads
from hnm_d2.modeling.losses import background_cross_entropy
from hnm_d2.modeling.roi_heads_negative_topk import top_scored

TOP_K = 4
LOSS_ON = {
    "MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED": True,
    "MODEL.HNM.NEGATIVE_IMAGE_LOSS.TOP_K": TOP_K,
}
OBJECTS = [[10, 8, 40, 40], [50, 20, 80, 56]]


def loss_heads(**options):
    return seeded_model(tiny_cfg(**{**LOSS_ON, **options})).roi_heads


def two_images_proposals(num_negative=150):
    """A positive image's 30 proposals and a negative image's ``num_negative``: more than the
    64 RoIs the sampler takes per image."""
    return [
        rpn_like_proposals(grid_proposals(30)),
        rpn_like_proposals(grid_proposals(num_negative)),
    ]


def run_heads(heads, proposals, features=None):
    with EventStorage() as storage:
        _, losses = heads(None, features or random_features(), proposals, targets())
    return losses, storage


def targets():
    return [instances(OBJECTS), instances([])]


def recorded_calls(heads, monkeypatch):
    """The RoIs of each _last_stage_class_logits call, per call a list of per-image Instances."""
    calls, original = [], heads._last_stage_class_logits
    monkeypatch.setattr(
        heads, "_last_stage_class_logits", lambda f, rois: calls.append(rois) or original(f, rois)
    )
    return calls


def test_top_scored_are_the_k_highest_highest_first():
    scores = torch.tensor([0.2, 0.9, 0.1, 0.7, 0.5])
    assert top_scored(scores, 3).tolist() == [1, 3, 4]
    assert top_scored(scores, 10).tolist() == [1, 3, 4, 0, 2]  # fewer than k: all of them
    assert top_scored(torch.zeros(0), 3).tolist() == []


def test_on_it_adds_its_term_and_leaves_every_stock_loss_to_the_bit(stock_losses):  # noqa: F811
    losses = seeded_losses(seeded_model(tiny_cfg(**LOSS_ON)))
    loss_neg_topk = losses.pop("loss_neg_topk")
    assert_same_losses(losses, stock_losses)
    assert loss_neg_topk > 0 and loss_neg_topk.requires_grad


def test_it_trains_on_the_top_k_of_every_proposal_of_the_negative_images_only(monkeypatch):
    heads = loss_heads()
    proposals = two_images_proposals()
    negative_boxes = proposals[1].proposal_boxes.tensor
    # Known scores: the negative image's proposal i scores prescribed[i].
    prescribed = torch.randperm(len(negative_boxes), generator=torch.Generator().manual_seed(0))
    prescribed = prescribed.float() / len(negative_boxes)
    monkeypatch.setattr(heads, "_object_scores", lambda class_logits: prescribed)
    calls = recorded_calls(heads, monkeypatch)
    run_heads(heads, proposals)
    scored, trained = calls
    # Scored: every proposal of the negative image, as given (150 > the 64 sampled), nothing of
    # the positive one; trained on: the TOP_K highest-scored, highest first.
    assert [len(rois) for rois in scored] == [0, len(negative_boxes)]
    assert torch.equal(scored[1].proposal_boxes.tensor, negative_boxes)
    expected = negative_boxes[prescribed.argsort(descending=True)[:TOP_K]]
    assert len(trained[0]) == 0 and torch.equal(trained[1].proposal_boxes.tensor, expected)


def test_the_loss_is_the_weighted_mean_background_cross_entropy_of_the_top_scored(monkeypatch):
    heads = loss_heads(**{"MODEL.HNM.NEGATIVE_IMAGE_LOSS.WEIGHT": 2.5})
    proposals, features = two_images_proposals(), random_features()
    calls = recorded_calls(heads, monkeypatch)
    losses, storage = run_heads(heads, proposals, features)
    # By hand: score all the negative image's proposals, take the 4 best, cross-entropy toward
    # background (class 1 of 2), averaged, weighted.
    with torch.no_grad():
        logits = heads._last_stage_class_logits(features, [proposals[1][:0], proposals[1]])
    scores = F.softmax(logits, dim=1)[:, 0]
    top = scores.argsort(descending=True)[:TOP_K]
    assert torch.equal(calls[1][1].proposal_boxes.tensor, proposals[1].proposal_boxes.tensor[top])
    expected = 2.5 * F.cross_entropy(logits[top], torch.ones(TOP_K, dtype=torch.int64))
    torch.testing.assert_close(losses["loss_neg_topk"].detach(), expected)
    histories = storage.histories()
    assert histories["hnm/neg_topk_images"].latest() == 1
    assert histories["hnm/neg_topk_score"].latest() == pytest.approx(scores[top].mean().item())


def test_a_step_on_the_loss_lowers_the_chosen_proposals_object_scores(monkeypatch):
    heads = loss_heads()
    proposals, features = two_images_proposals(), random_features()
    features = {name: f.detach() for name, f in features.items()}
    calls = recorded_calls(heads, monkeypatch)
    losses, _ = run_heads(heads, proposals, features)
    chosen = calls[1]

    def object_scores():
        with torch.no_grad():
            return heads._object_scores(heads._last_stage_class_logits(features, chosen))

    before = object_scores()
    optimizer = torch.optim.SGD(heads.parameters(), lr=0.05)
    optimizer.zero_grad()
    losses["loss_neg_topk"].backward()
    optimizer.step()
    after = object_scores()
    assert len(before) == TOP_K and bool((after < before).all()), (before, after)


def test_without_a_negative_image_the_term_is_a_zero_in_the_graph():
    heads = loss_heads()
    proposals = [rpn_like_proposals(grid_proposals(30)) for _ in range(2)]
    with EventStorage():
        _, losses = heads(None, random_features(), proposals, [instances(OBJECTS)] * 2)
    assert losses["loss_neg_topk"].item() == 0 and losses["loss_neg_topk"].requires_grad
    sum(losses.values()).backward()  # as the trainer does


def test_off_the_heads_do_not_score_the_negative_images(monkeypatch):
    heads = seeded_model(tiny_cfg()).roi_heads
    calls = recorded_calls(heads, monkeypatch)
    losses, storage = run_heads(heads, two_images_proposals())
    assert calls == [] and "loss_neg_topk" not in losses
    assert not [name for name in storage.histories() if name.startswith("hnm/")]


@pytest.mark.parametrize("use_sigmoid_ce", [False, True])
def test_background_cross_entropy_is_the_stock_loss_of_a_background_roi(use_sigmoid_ce):
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    per_roi = background_cross_entropy(logits, use_sigmoid_ce)
    if use_sigmoid_ce:  # detectron2's sigmoid_cross_entropy_loss: summed, divided by R
        stock = F.binary_cross_entropy_with_logits(
            logits[:, :-1], torch.zeros(5, 2), reduction="sum"
        ) / len(logits)
    else:
        stock = F.cross_entropy(logits, torch.full((5,), 2))
    assert per_roi.shape == (5,)
    torch.testing.assert_close(per_roi.mean(), stock)


@pytest.mark.parametrize(
    "key, value, fix",
    [
        ("MODEL.HNM.NEGATIVE_IMAGE_LOSS.TOP_K", 0, "an integer >= 1"),
        ("MODEL.HNM.NEGATIVE_IMAGE_LOSS.WEIGHT", 0.0, "ENABLED False"),
        ("MODEL.HNM.NEGATIVE_IMAGE_LOSS.WEIGHT", float("nan"), "> 0"),
    ],
)
def test_invalid_values_fail_naming_the_key_and_the_fix(key, value, fix):
    with pytest.raises(HNMConfigError, match=rf"{key.replace('.', '[.]')} = .*{fix}"):
        build_model(tiny_cfg(**{**LOSS_ON, key: value}))


def test_constructor_arguments_are_checked_without_a_config():
    cfg = tiny_cfg()
    model = seeded_model(cfg)
    arguments = HNMROIHeads.from_config(cfg, model.backbone.output_shape())
    with pytest.raises(HNMConfigError, match=r"negative_image_topk=0.*TOP_K"):
        HNMROIHeads(**arguments, negative_image_topk=0)
    heads = HNMROIHeads(**arguments, negative_image_topk=2, negative_image_loss_weight=0.5)
    assert (heads.negative_image_topk, heads.negative_image_loss_weight) == (2, 0.5)


def test_cascade_heads_and_stock_heads_are_refused_naming_the_fix():
    cascade = tiny_cfg(
        **LOSS_ON,
        **{
            "MODEL.ROI_HEADS.NAME": "HNMCascadeROIHeads",
            "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
        },
    )
    with pytest.raises(HNMConfigError, match="HNMCascadeROIHeads, which has 3 box predictors"):
        build_model(cascade)
    stock = tiny_cfg(**LOSS_ON, **{"MODEL.ROI_HEADS.NAME": "StandardROIHeads"})
    with pytest.raises(HNMConfigError, match="NEGATIVE_IMAGE_LOSS.ENABLED.*'HNMROIHeads'"):
        build_model(stock)
