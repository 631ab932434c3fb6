"""Model-level tests of HNMRCNN / HNMRPN / HNMROIHeads on a tiny ResNet-18 FPN Faster R-CNN.

Off means stock (to the bit), OHEM trains on the kept RoIs only, the hard-negative buffer
injects into the next visit of an image and survives a checkpoint, everything on trains, and
bad config values fail when the model is built.
"""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import StandardROIHeads, build_model
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage

import hnm_d2  # noqa: F401  (registers the hnm_d2 classes)
from hnm_d2.config import HNMConfigError, add_hnm_config
from hnm_d2.modeling import HNMRCNN, HNMRPN, HNMROIHeads, image_key

HEIGHT, WIDTH = 64, 96

EVERYTHING_ON = {
    "MODEL.HNM.ROI_OHEM.ENABLED": True,
    "MODEL.HNM.ROI_OHEM.MIN_POSITIVE_FRACTION": 0.25,
    "MODEL.HNM.RPN_OHEM.ENABLED": True,
    "MODEL.HNM.RPN_OHEM.NEG_POS_RATIO": 3.0,
    "MODEL.HNM.BUFFER.ENABLED": True,
    "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0,
    "MODEL.HNM.ROI_BG_WEIGHT": 0.5,
    "MODEL.HNM.RPN_BG_WEIGHT": 0.5,
    "MODEL.HNM.ROI_FOCAL.ENABLED": True,
}


def tiny_cfg(hnm=True, **options):
    """A tiny Faster R-CNN config; ``hnm=False`` names the stock classes instead."""
    cfg = get_cfg()
    add_hnm_config(cfg)
    m = cfg.MODEL
    m.DEVICE, m.WEIGHTS = "cpu", ""
    m.META_ARCHITECTURE = "HNMRCNN" if hnm else "GeneralizedRCNN"
    m.PROPOSAL_GENERATOR.NAME = "HNMRPN" if hnm else "RPN"
    m.ROI_HEADS.NAME = "HNMROIHeads" if hnm else "StandardROIHeads"
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.RESNETS.DEPTH, m.RESNETS.RES2_OUT_CHANNELS, m.RESNETS.NORM = 18, 64, "BN"
    m.RESNETS.OUT_FEATURES = m.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m.FPN.OUT_CHANNELS = 32
    m.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    m.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    m.RPN.POST_NMS_TOPK_TRAIN = 200
    m.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    m.ROI_HEADS.NUM_CLASSES = 1
    m.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    m.ROI_BOX_HEAD.NAME, m.ROI_BOX_HEAD.NUM_FC, m.ROI_BOX_HEAD.FC_DIM = "FastRCNNConvFCHead", 2, 64
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (HEIGHT,), WIDTH
    m.HNM.BUFFER.WARMUP_ITERS = 0  # these tests run a few iterations: record from the first
    m.HNM.FEATURE_MEMORY.WARMUP_ITERS = 0
    for key, value in options.items():
        cfg.merge_from_list([key, value])
    return cfg


def seeded_model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    return model


def instances(boxes):
    inst = Instances((HEIGHT, WIDTH))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.zeros(len(boxes), dtype=torch.int64)
    return inst


FILE_NAMES = ["positive.jpg", "negative.jpg"]
NO_AUGMENTATION = T.TransformList([])


def batch(transforms=NO_AUGMENTATION):
    """Two images: "positive.jpg" (id 7) with two objects, and "negative.jpg" with none."""
    generator = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, HEIGHT, WIDTH), generator=generator).float() for _ in "ab"]
    inputs = [
        {"image": images[0], "instances": instances([[10, 8, 40, 40], [50, 20, 80, 56]])},
        {"image": images[1], "instances": instances([])},
    ]
    for x, image_id, file_name in zip(inputs, [7, 8], FILE_NAMES):
        x.update(image_id=image_id, file_name=file_name, transforms=transforms)
    return inputs


def rpn_like_proposals(boxes):
    proposals = Instances((HEIGHT, WIDTH))
    proposals.proposal_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    proposals.objectness_logits = torch.zeros(len(boxes))
    return proposals


def grid_proposals(n):
    """n random boxes with integer corners inside the top-left 46 x 46 px, shape (n, 4)."""
    generator = torch.Generator().manual_seed(3)
    xy = torch.randint(0, 30, (n, 2), generator=generator)
    return torch.cat([xy, xy + torch.randint(4, 16, (n, 2), generator=generator)], dim=1)


def random_features():
    """FPN-like feature maps (p2-p5) of a batch of 2, leaves that take gradients."""
    generator = torch.Generator().manual_seed(5)
    return {
        f"p{level}": torch.randn(
            2, 32, HEIGHT >> level, WIDTH >> level, generator=generator
        ).requires_grad_()
        for level in (2, 3, 4, 5)
    }


def seeded_losses(model, inputs=None):
    torch.manual_seed(123)
    with EventStorage():
        return model(inputs or batch())


def assert_same_losses(a, b, exact=True):
    assert a.keys() == b.keys() == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), (key, a[key], b[key])
        else:
            torch.testing.assert_close(a[key], b[key], msg=key)


@pytest.fixture(scope="module")
def stock_losses():
    return seeded_losses(seeded_model(tiny_cfg(hnm=False)))


def test_builds_the_registered_classes():
    model = seeded_model(tiny_cfg())
    assert isinstance(model, HNMRCNN)
    assert isinstance(model.proposal_generator, HNMRPN)
    assert isinstance(model.roi_heads, HNMROIHeads)


def test_defaults_are_stock_to_the_bit(stock_losses):
    stock, hnm = seeded_model(tiny_cfg(hnm=False)), seeded_model(tiny_cfg())
    stock_state, hnm_state = stock.state_dict(), hnm.state_dict()
    assert stock_state.keys() == hnm_state.keys()
    assert all(torch.equal(stock_state[k], hnm_state[k]) for k in stock_state)
    assert_same_losses(seeded_losses(hnm), stock_losses)


@pytest.mark.parametrize(
    "options, exact",
    [
        # Identical code path: the weights' neutral value skips the recomputation.
        ({"MODEL.HNM.ROI_BG_WEIGHT": 1.0, "MODEL.HNM.RPN_BG_WEIGHT": 1.0}, True),
        # Same path plus a forward hook that records the scores.
        ({"MODEL.HNM.BUFFER.ENABLED": True}, True),
        # The negative-image loss off, its other keys set: forward hands over to stock.
        (
            {
                "MODEL.HNM.NEGATIVE_IMAGE_LOSS.TOP_K": 3,
                "MODEL.HNM.NEGATIVE_IMAGE_LOSS.WEIGHT": 2.0,
            },
            True,
        ),
        # loss_cls recomputed as focal loss with gamma 0: the same math, other kernels.
        ({"MODEL.HNM.ROI_FOCAL.ENABLED": True, "MODEL.HNM.ROI_FOCAL.GAMMA": 0.0}, False),
    ],
)
def test_neutral_settings_reproduce_stock(stock_losses, options, exact):
    model = seeded_model(tiny_cfg(**options))
    assert_same_losses(seeded_losses(model), stock_losses, exact=exact)


def test_ohem_candidates_are_all_labelled_proposals():
    heads = seeded_model(tiny_cfg(**{"MODEL.HNM.ROI_OHEM.ENABLED": True})).roi_heads
    proposal_boxes = torch.tensor([[0, 0, 8, 8], [12, 10, 40, 40], [60, 0, 90, 10]]).float()
    proposals = Instances((HEIGHT, WIDTH), proposal_boxes=Boxes(proposal_boxes))
    proposals.objectness_logits = torch.zeros(3)
    targets = instances([[10, 8, 40, 40]])
    with EventStorage():
        (labelled,) = heads.label_and_sample_proposals([proposals], [targets])
    # 3 proposals + the appended gt box, background ones at IoU 0 included.
    assert len(labelled) == 4
    assert sorted(labelled.gt_classes.tolist()) == [0, 0, 1, 1]


def test_ohem_backpropagates_through_kept_rois_only(monkeypatch):
    model = seeded_model(
        tiny_cfg(
            **{"MODEL.HNM.ROI_OHEM.ENABLED": True, "MODEL.HNM.ROI_OHEM.BATCH_SIZE_PER_IMAGE": 16}
        )
    )
    heads = model.roi_heads
    pooled = []
    heads.box_pooler.register_forward_hook(lambda _m, _i, out: pooled.append(out))
    kept_indices = []
    select = heads._select_hard_rois
    monkeypatch.setattr(
        heads,
        "_select_hard_rois",
        lambda *args: kept_indices.append(select(*args)) or kept_indices[-1],
    )
    # Leaf feature maps, so that their gradients can be compared.
    generator = torch.Generator().manual_seed(5)
    features = {
        f"p{level}": torch.randn(
            2, 32, HEIGHT >> level, WIDTH >> level, generator=generator
        ).requires_grad_()
        for level in (2, 3, 4, 5)
    }
    with EventStorage():
        candidates = heads.label_and_sample_proposals(
            [rpn_like_proposals(grid_proposals(150)) for _ in range(2)],
            [instances([[10, 8, 40, 40], [50, 20, 80, 56]]), instances([])],
        )
        ohem_losses = heads._forward_box(features, candidates)
        ohem_grads = torch.autograd.grad(sum(ohem_losses.values()), list(features.values()))

        # The ranking pass pooled every candidate without gradients, the training pass the
        # kept RoIs only, with gradients.
        (keep,) = kept_indices
        assert [len(k) for k in keep] == [16, 16]
        assert not pooled[0].requires_grad and pooled[0].shape[0] == sum(map(len, candidates))
        assert pooled[1].requires_grad and pooled[1].shape[0] == 32
        # Stock box branch on the kept RoIs alone: the same losses and the same gradients.
        kept = [p[k] for p, k in zip(candidates, keep)]
        stock_losses = StandardROIHeads._forward_box(heads, features, kept)
        stock_grads = torch.autograd.grad(sum(stock_losses.values()), list(features.values()))
    for key in stock_losses:
        assert torch.equal(ohem_losses[key], stock_losses[key]), key
    for ohem_grad, stock_grad in zip(ohem_grads, stock_grads):
        assert torch.equal(ohem_grad, stock_grad)


def test_ohem_rejects_other_box_losses_at_build_time():
    cfg = tiny_cfg(
        **{"MODEL.HNM.ROI_OHEM.ENABLED": True, "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": "giou"}
    )
    with pytest.raises(HNMConfigError, match="MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE"):
        build_model(cfg)


def buffer_heads(**options):
    return seeded_model(tiny_cfg(**{"MODEL.HNM.BUFFER.ENABLED": True, **options})).roi_heads


def test_buffered_box_comes_back_mirrored_on_a_flipped_visit():
    heads = buffer_heads()
    key = image_key("a.jpg")
    heads.hard_negative_buffer.record_visit(
        key, torch.tensor([[5.0, 50.0, 20.0, 60.0]]), torch.ones(1), 0
    )
    flip = T.TransformList([T.HFlipTransform(WIDTH)])
    with EventStorage(), heads.visiting([{"file_name": "a.jpg", "transforms": flip}]):
        (sampled,) = heads.label_and_sample_proposals(
            [rpn_like_proposals(grid_proposals(100))], [instances([[60, 8, 90, 40]])]
        )
    mirrored = torch.tensor([WIDTH - 20.0, 50.0, WIDTH - 5.0, 60.0])
    is_mirrored = (sampled.proposal_boxes.tensor == mirrored).all(dim=1)
    assert int(is_mirrored.sum()) == 1
    assert sampled.gt_classes[is_mirrored].item() == heads.num_classes  # background


@pytest.mark.parametrize("num_proposals, bg_share", [(200, 0.25), (200, 0.5), (5, 0.25)])
def test_buffered_boxes_get_their_share_of_the_background_quota(num_proposals, bg_share):
    heads = buffer_heads(
        **{"MODEL.HNM.BUFFER.BG_SHARE": bg_share, "MODEL.HNM.BUFFER.PER_IMAGE": 32}
    )
    # 20 disjoint boxes with half-pixel corners, which no integer proposal has.
    x0 = torch.arange(20.0)[:, None] * 3 + 0.5
    buffered = torch.cat([x0, torch.full_like(x0, 50.5), x0 + 2, torch.full_like(x0, 60.5)], 1)
    heads.hard_negative_buffer.record_visit(
        image_key("a.jpg"), buffered, torch.linspace(1.0, 0.6, 20), 0
    )
    proposals = rpn_like_proposals(grid_proposals(num_proposals))
    visit = [{"file_name": "a.jpg", "transforms": T.TransformList([])}]
    with EventStorage() as storage, heads.visiting(visit):
        (sampled,) = heads.label_and_sample_proposals([proposals], [instances([[60, 8, 90, 40]])])
    num_fg = int((sampled.gt_classes == 0).sum())
    is_buffered = (sampled.proposal_boxes.tensor[:, 0] % 1) == 0.5
    expected = min(20, int(bg_share * (heads.batch_size_per_image - num_fg)))
    assert int(is_buffered.sum()) == expected
    assert storage.history("hnm/buffer_injected").latest() == expected
    # The batch never grows past B; a short batch gets the buffered boxes on top.
    num_ordinary = num_proposals + 1  # + the appended gt box
    assert len(sampled) == min(heads.batch_size_per_image, num_ordinary + expected)
    # The best-scored buffered boxes go first.
    assert torch.equal(sampled.proposal_boxes.tensor[is_buffered], buffered[:expected])


def test_background_proposals_are_stored_in_original_coordinates(monkeypatch):
    model = seeded_model(
        tiny_cfg(
            **{
                "MODEL.HNM.BUFFER.ENABLED": True,
                "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0,  # store every background proposal,
                "MODEL.HNM.BUFFER.MAX_OBJECT_IOU": 1.0,  # near an object or not,
                "MODEL.HNM.BUFFER.PER_IMAGE": 1000,
                "MODEL.HNM.BUFFER.DEDUP_IOU": 1.0,  # and merge none
            }
        )
    )
    heads = model.roi_heads
    sampled = []
    label_and_sample = heads.label_and_sample_proposals
    monkeypatch.setattr(
        heads,
        "label_and_sample_proposals",
        lambda *a: sampled.extend(label_and_sample(*a)) or sampled,
    )
    seeded_losses(model, batch(transforms=T.TransformList([T.HFlipTransform(WIDTH)])))

    for file_name, proposals in zip(FILE_NAMES, sampled):
        background = proposals.proposal_boxes.tensor[proposals.gt_classes == heads.num_classes]
        stored, _ = heads.hard_negative_buffer.boxes_of(image_key(file_name))
        flipped_back = torch.stack(
            [WIDTH - stored[:, 2], stored[:, 1], WIDTH - stored[:, 0], stored[:, 3]], dim=1
        )
        assert len(stored) == len(background) > 0
        distance = torch.cdist(
            flipped_back, background, compute_mode="donot_use_mm_for_euclid_dist"
        )
        assert distance.min(dim=1).values.max() < 1e-3


def test_buffer_is_filled_then_injected_on_the_next_visit():
    model = seeded_model(
        tiny_cfg(**{"MODEL.HNM.BUFFER.ENABLED": True, "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0})
    )
    with EventStorage() as storage:
        model(batch())
        assert model.roi_heads.hard_negative_buffer.num_entries > 0
        assert storage.history("hnm/buffer_injected").latest() == 0
        storage.step()
        model(batch())
        assert storage.history("hnm/buffer_injected").latest() > 0


def test_an_untrained_model_records_nothing_during_the_warm_up():
    model = seeded_model(
        tiny_cfg(
            **{
                "MODEL.HNM.BUFFER.ENABLED": True,
                "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0,  # every background box is hard
                "MODEL.HNM.BUFFER.WARMUP_ITERS": 3,
            }
        )
    )
    sizes = []
    with EventStorage() as storage:
        for _ in range(4):
            model(batch())
            sizes.append(model.roi_heads.hard_negative_buffer.num_entries)
            storage.step()
    assert sizes[:3] == [0, 0, 0] and sizes[3] > 0


@pytest.mark.parametrize("threshold, stays", [(0.0, True), (0.5, False)])
def test_a_revisit_replaces_the_entries_by_their_new_scores(threshold, stays):
    options = {
        "MODEL.HNM.BUFFER.ENABLED": True,
        "MODEL.HNM.BUFFER.SCORE_THRESH": threshold,
        "MODEL.HNM.BUFFER.PER_IMAGE": 1000,  # keep every hard box
        "MODEL.HNM.BUFFER.DEDUP_IOU": 1.0,  # and merge none
    }
    model = seeded_model(tiny_cfg(**options))
    buffer = model.roi_heads.hard_negative_buffer
    # Recorded hard (0.995) by an earlier model; the untrained one scores every box below 0.3.
    box = torch.tensor([[60.0, 2.0, 90.0, 14.0]])  # background in both images
    for name in [FILE_NAMES[1], "not_visited.jpg"]:
        buffer.record_visit(image_key(name), box, torch.tensor([0.995]), iteration=0)
    with EventStorage():
        model(batch())
    visited_boxes, visited_scores = buffer.boxes_of(image_key(FILE_NAMES[1]))
    at_box = (visited_boxes == box).all(dim=1)
    if stays:  # still hard at threshold 0: kept, with the score of this iteration's model
        # (twice without merging: trained on as an injected proposal, and re-scored)
        assert at_box.any() and all(s < 0.3 for s in visited_scores[at_box].tolist())
    else:  # easy now at 0.5: gone, and nothing else of the image is that hard either
        assert len(visited_boxes) == 0
    assert buffer.boxes_of(image_key("not_visited.jpg"))[1].tolist() == pytest.approx([0.995])


def test_buffer_needs_the_hnm_meta_architecture():
    cfg = tiny_cfg(
        **{"MODEL.HNM.BUFFER.ENABLED": True, "MODEL.META_ARCHITECTURE": "GeneralizedRCNN"}
    )
    with pytest.raises(
        HNMConfigError, match="MODEL.META_ARCHITECTURE = 'GeneralizedRCNN'.*HNMRCNN"
    ):
        build_model(cfg)


def test_buffer_survives_a_checkpoint_round_trip(tmp_path):
    cfg = tiny_cfg(**{"MODEL.HNM.BUFFER.ENABLED": True, "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0})
    model = seeded_model(cfg)
    seeded_losses(model)
    saved = model.roi_heads.hard_negative_buffer.entries
    assert len(saved.keys) > 0
    DetectionCheckpointer(model, str(tmp_path)).save("model")

    fresh = seeded_model(cfg)
    assert fresh.roi_heads.hard_negative_buffer.num_entries == 0
    DetectionCheckpointer(fresh).load(str(tmp_path / "model.pth"))
    restored = fresh.roi_heads.hard_negative_buffer.entries
    for column, (a, b) in zip(saved._fields, zip(saved, restored)):
        assert torch.equal(a, b), column


def test_a_few_iterations_with_everything_on():
    model = seeded_model(tiny_cfg(**EVERYTHING_ON))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    with EventStorage() as storage:
        for _ in range(3):
            losses = model(batch(transforms=T.TransformList([T.HFlipTransform(WIDTH)])))
            assert all(torch.isfinite(v) for v in losses.values()), losses
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            storage.step()
        scalars = set(storage.histories())
    assert model.roi_heads.hard_negative_buffer.num_entries > 0
    expected = {
        "hnm/buffer_size",
        "hnm/buffer_mean_score",
        "hnm/buffer_injected",
        "hnm/ohem_kept_pos",
        "hnm/ohem_kept_neg",
        "hnm/ohem_kept_loss_mean",
        "hnm/rpn_ohem_neg",
        "hnm/rpn_ohem_neg_loss_mean",
    }
    assert expected <= scalars


def test_mechanisms_off_log_no_hnm_scalars():
    with EventStorage() as storage:
        seeded_model(tiny_cfg())(batch())
    assert not [name for name in storage.histories() if name.startswith("hnm/")]


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.HNM.ROI_BG_WEIGHT", -1.0),
        ("MODEL.HNM.RPN_BG_WEIGHT", -0.5),
        ("MODEL.HNM.ROI_OHEM.NMS_THRESH", 0.0),
        ("MODEL.HNM.ROI_OHEM.NMS_THRESH", 1.5),
        ("MODEL.HNM.RPN_OHEM.NEG_POS_RATIO", -1.0),
        ("MODEL.HNM.BUFFER.CAPACITY", 0),
        ("MODEL.HNM.BUFFER.BG_SHARE", 1.5),
        ("MODEL.HNM.ROI_FOCAL.GAMMA", -1.0),
    ],
)
def test_invalid_values_fail_at_build_time_naming_the_key(key, value):
    with pytest.raises(HNMConfigError, match=key.replace(".", r"\.")):
        build_model(tiny_cfg(**{key: value}))


@pytest.mark.parametrize("max_iou, near_box_stored", [(0.3, False), (1.0, True)])
def test_boxes_overlapping_an_object_are_not_hard_negatives(max_iou, near_box_stored):
    # A box at IoU 0.45 with the object is background to the matcher (< 0.5), but it is a
    # mislocalised detection of the object, not a false alarm: MAX_OBJECT_IOU keeps it out.
    heads = buffer_heads(
        **{"MODEL.HNM.BUFFER.SCORE_THRESH": 0.0, "MODEL.HNM.BUFFER.MAX_OBJECT_IOU": max_iou}
    )
    obj = [10.0, 8, 40, 40]
    near = [10.0, 8, 40, 40 * 0.45 + 8 * 0.55]  # the object's top 45%: IoU 0.45
    far = [60.0, 40, 80, 60]
    proposals = [rpn_like_proposals([near, far]), rpn_like_proposals([far])]
    inputs = batch()
    with EventStorage(), heads.visiting(inputs):
        heads(None, random_features(), proposals, [instances([obj]), instances([])])
    boxes, _ = heads.hard_negative_buffer.boxes_of(image_key(inputs[0]["file_name"]))
    ious = pairwise_iou(Boxes(torch.tensor([obj])), Boxes(boxes))[0]
    assert ious.min() == 0  # the far box is stored either way
    assert bool((ious - 0.45).abs().lt(0.01).any()) == near_box_stored
