"""HNMCascadeROIHeads: off is stock Cascade R-CNN to the bit; OHEM mines each stage from all of
its candidates and trains on the kept RoIs only; down-weighting reaches every stage; the buffer
scores with the last stage and re-injects at stage 0; what a cascade cannot do is refused."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.structures import Boxes, pairwise_iou
from detectron2.utils.events import EventStorage
from test_heads import (
    batch,
    grid_proposals,
    instances,
    random_features,
    rpn_like_proposals,
    seeded_losses,
    seeded_model,
    tiny_cfg,
)

from hnm_d2.config import HNMConfigError
from hnm_d2.modeling import HNMCascadeROIHeads, HNMFastRCNNOutputLayers, HNMROIHeads, image_key

STAGES = 3


def cascade_cfg(hnm=True, **options):
    return tiny_cfg(
        hnm,
        **{
            "MODEL.ROI_HEADS.NAME": "HNMCascadeROIHeads" if hnm else "CascadeROIHeads",
            "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
        },
        **options,
    )


def test_defaults_are_stock_cascade_to_the_bit():
    stock, hnm = seeded_model(cascade_cfg(hnm=False)), seeded_model(cascade_cfg())
    assert type(stock.roi_heads) is CascadeROIHeads
    assert isinstance(hnm.roi_heads, HNMCascadeROIHeads) and isinstance(hnm.roi_heads, HNMROIHeads)
    stock_state, hnm_state = stock.state_dict(), hnm.state_dict()
    assert stock_state.keys() == hnm_state.keys()
    assert all(torch.equal(stock_state[k], hnm_state[k]) for k in stock_state)
    stock_losses, hnm_losses = seeded_losses(stock), seeded_losses(hnm)
    assert {f"loss_cls_stage{s}" for s in range(STAGES)} <= hnm_losses.keys()
    assert stock_losses.keys() == hnm_losses.keys()
    for key in stock_losses:
        assert torch.equal(stock_losses[key], hnm_losses[key]), key


def test_background_weight_reaches_every_stage():
    weighted = seeded_model(cascade_cfg(**{"MODEL.HNM.ROI_BG_WEIGHT": 0.25}))
    assert all(
        isinstance(p, HNMFastRCNNOutputLayers) and p.bg_weight == 0.25
        for p in weighted.roi_heads.box_predictor
    )
    stock_losses, weighted_losses = seeded_losses(seeded_model(cascade_cfg())), seeded_losses(
        weighted
    )
    for stage in range(STAGES):
        # Box regression (foreground only) is untouched; every stage's class loss is lighter.
        box_key, cls_key = f"loss_box_reg_stage{stage}", f"loss_cls_stage{stage}"
        assert torch.equal(stock_losses[box_key], weighted_losses[box_key])
        assert weighted_losses[cls_key] < stock_losses[cls_key]


def test_ohem_mines_every_stage_from_all_its_candidates(monkeypatch):
    options = {"MODEL.HNM.ROI_OHEM.ENABLED": True, "MODEL.HNM.ROI_OHEM.BATCH_SIZE_PER_IMAGE": 8}
    model = seeded_model(cascade_cfg(**options))
    heads = model.roi_heads
    selections, head_inputs = [], {stage: [] for stage in range(STAGES)}
    select = heads._select_hard_rois

    def recording_select(proposals, losses):
        selections.append(([len(p) for p in proposals], select(proposals, losses)))
        return selections[-1][1]

    monkeypatch.setattr(heads, "_select_hard_rois", recording_select)
    for stage, head in enumerate(heads.box_head):
        head.register_forward_hook(
            lambda _m, args, _out, s=stage: head_inputs[s].append(
                (args[0].shape[0], torch.is_grad_enabled())
            )
        )
    with EventStorage() as storage:
        losses = model(batch())
    assert len(selections) == STAGES
    num_candidates = [sum(counts) for counts, _ in selections]
    num_kept = [sum(len(k) for k in keep) for _, keep in selections]
    # Each stage keeps B = 8 per image out of hundreds of candidates, and the next stage's
    # candidates are the refined boxes of all of them, not of the kept few.
    assert num_kept == [16] * STAGES
    assert all(n > 100 for n in num_candidates)
    # Each stage's head ran twice: on every candidate without gradients, on the kept with them.
    for stage in range(STAGES):
        assert head_inputs[stage] == [(num_candidates[stage], False), (num_kept[stage], True)]
    assert all(torch.isfinite(v) for v in losses.values())
    assert {f"stage{s}/hnm/ohem_kept_neg" for s in range(STAGES)} <= set(storage.histories())


def test_buffer_scores_with_the_last_stage_and_comes_back_at_stage_0():
    options = {"MODEL.HNM.BUFFER.ENABLED": True, "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0}
    model = seeded_model(cascade_cfg(**options))
    heads = model.roi_heads
    inputs = batch()
    with EventStorage():
        model(inputs)
    boxes, scores = heads.hard_negative_buffer.boxes_of(image_key(inputs[1]["file_name"]))
    assert len(boxes) > 0
    # A stored box of the negative image, re-scored as in training (same batch, same BatchNorm
    # statistics): its stored score is the last stage's, not the first stage's.
    with torch.no_grad():
        features = model.backbone(model.preprocess_image(inputs).tensor)
        per_image = [Boxes(torch.zeros(0, 4)), Boxes(boxes[:1])]
        pooled = heads.box_pooler([features[f] for f in heads.box_in_features], per_image)
        stage_scores = [
            torch.softmax(predictor(head(pooled))[0], dim=1)[0, 0].item()
            for head, predictor in zip(heads.box_head, heads.box_predictor)
        ]
    assert scores[0].item() == pytest.approx(stage_scores[-1], abs=1e-5)
    assert scores[0].item() != pytest.approx(stage_scores[0], abs=1e-3)
    with EventStorage() as storage:
        model(inputs)
        assert storage.latest()["hnm/buffer_injected"][0] > 0


def test_feature_memory_is_refused_naming_the_box_buffer():
    options = {"MODEL.HNM.FEATURE_MEMORY.ENABLED": True}
    with pytest.raises(
        HNMConfigError, match="MODEL.HNM.FEATURE_MEMORY.ENABLED.*MODEL.HNM.BUFFER.ENABLED"
    ):
        build_model(cascade_cfg(**options))


def test_stock_cascade_with_hnm_keys_is_refused_naming_the_hnm_variant():
    cfg = cascade_cfg(hnm=False, **{"MODEL.HNM.ROI_OHEM.ENABLED": True})
    cfg.MODEL.META_ARCHITECTURE = "HNMRCNN"
    with pytest.raises(HNMConfigError, match="'CascadeROIHeads'.*'HNMCascadeROIHeads'"):
        build_model(cfg)


def test_buffer_records_only_what_stage_0_calls_background():
    # The last stage labels background below IoU 0.7; the buffer re-injects at stage 0, which
    # calls a box at IoU 0.5-0.7 foreground: such boxes must not be recorded. Proposals: shifted
    # copies of the object at IoU ~0.58 (an untrained stage barely moves a box) and background.
    # MAX_OBJECT_IOU 1.0: only the matcher's bound keeps them out.
    options = {
        "MODEL.HNM.BUFFER.ENABLED": True,
        "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0,
        "MODEL.HNM.BUFFER.MAX_OBJECT_IOU": 1.0,
    }
    heads = seeded_model(cascade_cfg(**options)).roi_heads
    obj = torch.tensor([[10.0, 8, 40, 40]])
    shifted = torch.cat([obj + torch.tensor([dx, 0, dx, 0]) for dx in (8.0, 8.5, -8.0, -7.5)])
    proposals = [rpn_like_proposals(torch.cat([shifted, grid_proposals(20) + 50])) for _ in "ab"]
    targets = [instances(obj.tolist()), instances([])]
    inputs = batch()
    with EventStorage(), heads.visiting(inputs):
        heads(None, random_features(), proposals, targets)
    boxes, _ = heads.hard_negative_buffer.boxes_of(image_key(inputs[0]["file_name"]))
    assert len(boxes) > 0
    assert pairwise_iou(Boxes(obj), Boxes(boxes)).max() < 0.5


def labelled_candidates(heads, targets):
    proposals = [rpn_like_proposals(grid_proposals(60)), rpn_like_proposals(grid_proposals(60))]
    with EventStorage():
        return heads.label_and_sample_proposals(proposals, targets)


def test_ohem_keeping_every_candidate_trains_as_the_stock_cascade():
    # B above the number of candidates and no NMS: OHEM keeps them all, so each stage's losses
    # and the gradients reaching the features are the stock cascade's (up to summation order).
    options = {
        "MODEL.HNM.ROI_OHEM.ENABLED": True,
        "MODEL.HNM.ROI_OHEM.BATCH_SIZE_PER_IMAGE": 1000,
        "MODEL.HNM.ROI_OHEM.NMS_THRESH": 1.0,
    }
    heads = seeded_model(cascade_cfg(**options)).roi_heads
    targets = [instances([[10, 8, 40, 40], [50, 20, 80, 56]]), instances([])]
    candidates = labelled_candidates(heads, targets)
    features = random_features()
    with EventStorage():
        ohem = heads._forward_box(features, [c[:] for c in candidates], targets)
        ohem_grads = torch.autograd.grad(sum(ohem.values()), list(features.values()))
        stock = CascadeROIHeads._forward_box(heads, features, [c[:] for c in candidates], targets)
        stock_grads = torch.autograd.grad(sum(stock.values()), list(features.values()))
    assert ohem.keys() == stock.keys() and len(stock) == 2 * STAGES
    for key in stock:
        torch.testing.assert_close(ohem[key], stock[key], msg=key)
    for ohem_grad, stock_grad in zip(ohem_grads, stock_grads):
        torch.testing.assert_close(ohem_grad, stock_grad)


def test_ohem_accepts_train_on_pred_boxes_which_the_cascade_never_reads():
    options = {"MODEL.HNM.ROI_OHEM.ENABLED": True, "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": True}
    assert build_model(cascade_cfg(**options)).roi_heads.ohem_enabled
