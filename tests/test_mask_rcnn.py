"""Mask R-CNN (and Cascade Mask R-CNN) with every hnm_d2 mechanism: each trains with a finite
mask loss, the mask head sees only foreground RoIs (never the buffer's background boxes; under
OHEM the kept ones, at stage 0 in a cascade), and detectron2's own model-zoo R50-FPN configs
train once their names point at hnm_d2's classes."""

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks
from detectron2.utils.events import EventStorage
from test_heads import (
    EVERYTHING_ON,
    HEIGHT,
    WIDTH,
    batch,
    grid_proposals,
    instances,
    random_features,
    rpn_like_proposals,
    seeded_model,
    tiny_cfg,
)

import hnm_d2
from hnm_d2.modeling import HNMCascadeROIHeads, HNMROIHeads

MECHANISMS = {
    # A small OHEM batch, so that OHEM drops foreground RoIs too.
    "roi_ohem": {"MODEL.HNM.ROI_OHEM.ENABLED": True, "MODEL.HNM.ROI_OHEM.BATCH_SIZE_PER_IMAGE": 8},
    "rpn_ohem": {"MODEL.HNM.RPN_OHEM.ENABLED": True},
    "buffer": {"MODEL.HNM.BUFFER.ENABLED": True, "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0},
    "feature_memory": {
        "MODEL.HNM.FEATURE_MEMORY.ENABLED": True,
        "MODEL.HNM.FEATURE_MEMORY.SCORE_THRESH": 0.0,
    },
    "bg_weight": {"MODEL.HNM.ROI_BG_WEIGHT": 0.5, "MODEL.HNM.RPN_BG_WEIGHT": 0.5},
    "focal": {"MODEL.HNM.ROI_FOCAL.ENABLED": True},
    "everything": EVERYTHING_ON,
}


def with_masks(targets):
    """The targets with gt_masks filling each object's box."""
    for target in targets:
        boxes = target.gt_boxes.tensor.long()
        masks = torch.zeros(len(boxes), HEIGHT, WIDTH, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.tolist()):
            mask[y0:y1, x0:x1] = True
        target.gt_masks = BitMasks(masks)
    return targets


def masked_batch():
    inputs = batch()
    with_masks([x["instances"] for x in inputs])
    return inputs


def train_steps(model, steps=2):
    """Losses of each of ``steps`` SGD steps on the same batch, and the storage's scalars."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    history = []
    with EventStorage() as storage:
        for _ in range(steps):
            losses = model(masked_batch())
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            storage.step()
            history.append(losses)
    return history, set(storage.histories())


CASCADE = {
    "MODEL.ROI_HEADS.NAME": "HNMCascadeROIHeads",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
}
# (heads, mechanism): the cascade refuses the feature memory (test_cascade.py).
CASES = [({}, m) for m in MECHANISMS] + [(CASCADE, m) for m in MECHANISMS if m != "feature_memory"]


@pytest.mark.parametrize(
    "heads_options, mechanism",
    CASES,
    ids=[f"{'cascade' if h else 'standard'}-{m}" for h, m in CASES],
)
def test_mask_rcnn_trains_with_the_mechanism_on_foreground_rois_only(heads_options, mechanism):
    options = {"MODEL.MASK_ON": True, **heads_options, **MECHANISMS[mechanism]}
    model = seeded_model(tiny_cfg(**options))
    heads = model.roi_heads
    fg_given, mask_rois = [], []
    forward_mask = heads._forward_mask

    def recording_forward_mask(features, instances):
        # Under OHEM the heads hand the mask branch the RoIs OHEM kept (at stage 0).
        given = heads._ohem_kept if heads.ohem_enabled else instances
        fg_given.append(sum(int((x.gt_classes != heads.num_classes).sum()) for x in given))
        return forward_mask(features, instances)

    heads._forward_mask = recording_forward_mask
    heads.mask_head.register_forward_pre_hook(lambda _m, args: mask_rois.append(args[0].shape[0]))
    history, scalars = train_steps(model)
    for losses in history:
        assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values()), losses
    # The mask head pooled exactly the foreground RoIs it was handed, at every step.
    assert mask_rois == fg_given and all(n > 0 for n in mask_rois)
    if mechanism == "buffer":
        assert "hnm/buffer_injected" in scalars and heads.hard_negative_buffer.num_entries > 0


@pytest.mark.parametrize("heads_options", [{}, CASCADE], ids=["standard", "cascade"])
def test_ohem_trains_the_mask_on_the_kept_foreground_rois(heads_options, monkeypatch):
    options = {
        "MODEL.MASK_ON": True,
        **heads_options,
        "MODEL.HNM.ROI_OHEM.ENABLED": True,
        "MODEL.HNM.ROI_OHEM.BATCH_SIZE_PER_IMAGE": 8,
    }
    heads = seeded_model(tiny_cfg(**options)).roi_heads
    selections, mask_rois = [], []
    select = heads._select_hard_rois

    def recording_select(proposals, losses):
        selections.append((proposals, select(proposals, losses)))
        return selections[-1][1]

    monkeypatch.setattr(heads, "_select_hard_rois", recording_select)
    heads.mask_head.register_forward_pre_hook(lambda _m, args: mask_rois.append(args[0].shape[0]))
    # 20 near-copies of each object (foreground, overlapping: OHEM's NMS keeps few of them) and
    # 40 background boxes per image; the second image is negative.
    objects = torch.tensor([[10.0, 8, 40, 40], [50, 20, 80, 56]])
    copies = (objects[:, None] + torch.arange(10.0)[None, :, None] * 0.5).reshape(-1, 4)
    proposals = [
        rpn_like_proposals(torch.cat([copies, copies + 1, grid_proposals(40)])),
        rpn_like_proposals(grid_proposals(40)),
    ]
    targets = with_masks([instances(objects.tolist()), instances([])])
    with EventStorage():
        _, losses = heads(None, random_features(), proposals, targets)
    assert torch.isfinite(losses["loss_mask"])
    (candidates, keep), *later_stages = selections
    assert len(later_stages) == (2 if heads_options else 0)
    is_fg = [c.gt_classes != heads.num_classes for c in candidates]
    kept_fg = sum(int(fg[k].sum()) for fg, k in zip(is_fg, keep))
    # The mask head saw exactly the foreground among the kept RoIs, not every candidate's (in
    # a cascade stage 0's, as stock Cascade R-CNN trains the mask on stage 0's RoIs).
    assert mask_rois == [kept_fg] and 0 < kept_fg < sum(int(fg.sum()) for fg in is_fg)


ZOO_CONFIGS = {
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml": HNMROIHeads,
    "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml": HNMCascadeROIHeads,
}


@pytest.mark.parametrize("zoo_config", ZOO_CONFIGS)
def test_model_zoo_r50_fpn_mask_configs_train_with_every_mechanism(zoo_config):
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file(zoo_config))
    stock_heads = cfg.MODEL.ROI_HEADS.NAME
    cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.PROPOSAL_GENERATOR.NAME = "HNMRCNN", "HNMRPN"
    cfg.MODEL.ROI_HEADS.NAME = {"StandardROIHeads": "HNMROIHeads"}.get(
        stock_heads, "HNMCascadeROIHeads"
    )
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS, cfg.MODEL.ROI_HEADS.NUM_CLASSES = "cpu", "", 1
    options = dict(EVERYTHING_ON, **{"MODEL.HNM.BUFFER.WARMUP_ITERS": 0})
    cfg.merge_from_list([item for pair in options.items() for item in pair])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    assert type(model.roi_heads) is ZOO_CONFIGS[zoo_config]
    history, scalars = train_steps(model, steps=1)
    assert "loss_mask" in history[0] and all(torch.isfinite(v) for v in history[0].values())
    assert any(name.endswith("hnm/ohem_kept_neg") for name in scalars)
    assert "hnm/buffer_size" in scalars
