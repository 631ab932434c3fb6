"""hnm_d2 dropped into an everyday detectron2 project: an ImageNet .pkl loads as stock detectron2
loads it, every key at its default trains as stock detectron2 (losses and weights, to the bit),
image ids may repeat across datasets, and a mechanism that cannot work where it was put refuses
with a message naming the key and the fix."""

import json
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    FastRCNNOutputLayers,
    StandardROIHeads,
)
from detectron2.structures import Boxes
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from helpers import needs_sigmoid_ce
from test_heads import (
    batch,
    tiny_cfg,
)

import hnm_d2
from hnm_d2.config import HNMConfigError
from hnm_d2.data import build_hnm_train_loader, register_coco_with_negatives
from hnm_d2.engine import HNMTrainer, hnm_argument_parser, setup
from hnm_d2.modeling import HardNegativeBuffer, HNMFastRCNNOutputLayers, HNMROIHeads, image_key

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs/quick_schedules/hnm_instant_test.yaml"
STOCK_CLASSES = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.PROPOSAL_GENERATOR.NAME": "RPN",
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
}


def quick_cfg(**options):
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(str(QUICK))
    for key, value in options.items():
        cfg.merge_from_list([key, value])
    return cfg


# --------------------------------------------------------------------- pretrained weights


def convert_torchvision_resnet(state_dict):
    """What detectron2's tools/convert-torchvision-to-detectron2.py writes for a torchvision
    ResNet: renamed keys, numpy values, and the flag that asks for name-matching heuristics."""
    model = {}
    for key, value in state_dict.items():
        new_key = key if "layer" in key else "stem." + key
        for t in [1, 2, 3, 4]:
            new_key = new_key.replace(f"layer{t}", f"res{t + 1}")
        for t in [1, 2, 3]:
            new_key = new_key.replace(f"bn{t}", f"conv{t}.norm")
        new_key = new_key.replace("downsample.0", "shortcut").replace(
            "downsample.1", "shortcut.norm"
        )
        model[new_key] = value.detach().numpy()
    return {"model": model, "__author__": "torchvision", "matching_heuristics": True}


def test_imagenet_pkl_loads_through_train_net_as_stock_detectron2_loads_it(
    tmp_path, synthetic_datasets
):
    torch.manual_seed(0)
    torchvision_resnet = torchvision.models.resnet18(weights=None).state_dict()
    pkl = tmp_path / "R-18.pkl"
    pkl.write_bytes(pickle.dumps(convert_torchvision_resnet(torchvision_resnet)))

    # What train_net.py's main does: its setup(), then HNMTrainer.resume_or_load.
    args = hnm_argument_parser().parse_args(
        ["--config-file", str(REPO / "configs/hnm_R18_FPN_cpu.yaml"), "MODEL.WEIGHTS", str(pkl)]
        + ["DATASETS.TRAIN", "('synthetic_train',)", "OUTPUT_DIR", str(tmp_path / "out")]
    )
    trainer = HNMTrainer(setup(args))
    trainer.resume_or_load(resume=False)
    loaded = trainer.model.backbone.bottom_up.state_dict()

    stock = build_model(trainer.cfg)
    DetectionCheckpointer(stock).load(str(pkl))
    assert loaded.keys() == stock.backbone.bottom_up.state_dict().keys()
    for key, value in stock.backbone.bottom_up.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert torch.equal(loaded["stem.conv1.weight"], torchvision_resnet["conv1.weight"])
    assert torch.equal(
        loaded["res5.1.conv2.norm.running_var"], torchvision_resnet["layer4.1.bn2.running_var"]
    )


# ------------------------------------------------------------ every key off: stock training


def train_and_record(trainer_class, cfg, iterations):
    """Losses of every iteration and the final weights of a seeded run of ``trainer_class``."""
    seed_all_rng(0)
    trainer = trainer_class(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = {
        name: [value for value, _ in trainer.storage.history(name).values()]
        for name in ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc")
    }
    assert all(len(v) == iterations for v in losses.values())
    return losses, trainer.model.state_dict()


def test_every_key_at_its_default_trains_as_stock_detectron2(tmp_path, synthetic_datasets):
    iterations = 20
    common = {
        "SOLVER.MAX_ITER": iterations,
        "SOLVER.CHECKPOINT_PERIOD": 1000,
        "DATASETS.TEST": "()",
        "DATALOADER.FILTER_EMPTY_ANNOTATIONS": False,  # both train on the negative images
    }
    stock_cfg = quick_cfg(**common, **STOCK_CLASSES, OUTPUT_DIR=str(tmp_path / "stock"))
    hnm_cfg = quick_cfg(**common, OUTPUT_DIR=str(tmp_path / "hnm"))
    assert hnm_cfg.MODEL.ROI_HEADS.NAME == "HNMROIHeads"

    stock_losses, stock_weights = train_and_record(DefaultTrainer, stock_cfg, iterations)
    hnm_losses, hnm_weights = train_and_record(HNMTrainer, hnm_cfg, iterations)
    assert hnm_losses == stock_losses
    assert hnm_weights.keys() == stock_weights.keys()
    for key, value in stock_weights.items():
        assert torch.equal(hnm_weights[key], value), key


# ------------------------------------------------------------------ image ids across files


def renumbered_from_1(json_file, out_file):
    """A copy of a COCO JSON whose images are numbered 1, 2, ... as most COCO files are."""
    content = json.loads(Path(json_file).read_text())
    new_id = {image["id"]: k + 1 for k, image in enumerate(content["images"])}
    for image in content["images"]:
        image["id"] = new_id[image["id"]]
    for annotation in content["annotations"]:
        annotation["image_id"] = new_id[annotation["image_id"]]
    Path(out_file).write_text(json.dumps(content))
    return str(out_file)


@pytest.fixture
def two_coco_files_numbered_from_1(tmp_path, synthetic_root, synthetic_datasets, dataset_name):
    names = []
    for split in ("train", "test"):
        json_file = renumbered_from_1(synthetic_root / f"{split}.json", tmp_path / f"{split}.json")
        names.append(
            register_coco_with_negatives(dataset_name(), json_file, synthetic_root / split)
        )
    return names


def test_datasets_sharing_image_ids_train_with_every_mechanism(
    tmp_path, two_coco_files_numbered_from_1
):
    train = repr(tuple(two_coco_files_numbered_from_1))
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(str(REPO / "configs/quick_schedules/hnm_all_mechanisms_instant_test.yaml"))
    cfg.merge_from_list(["DATASETS.TRAIN", train, "DATASETS.TEST", "()"])
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2"])
    cfg.merge_from_list(["MODEL.HNM.BUFFER.SCORE_THRESH", "0.0"])  # store every background box
    trainer = HNMTrainer(cfg)
    trainer.train()
    assert trainer.model.roi_heads.hard_negative_buffer.num_entries > 0


def test_buffer_keeps_images_with_the_same_id_apart():
    model = build_model(
        tiny_cfg(**{"MODEL.HNM.BUFFER.ENABLED": True, "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0})
    )
    model.train()
    inputs = batch()
    for x, file_name in zip(inputs, ["a/000001.jpg", "b/000001.jpg"]):
        x.update(image_id=1, file_name=file_name)
    with EventStorage():
        model(inputs)
    buffer = model.roi_heads.hard_negative_buffer
    a, b = (len(buffer.boxes_of(image_key(f))[0]) for f in ["a/000001.jpg", "b/000001.jpg"])
    assert a > 0 and b > 0 and a + b == buffer.num_entries


# --------------------------------------------------------- refusals, however it was built


def test_buffer_refuses_inputs_without_transforms():
    # What detectron2's stock DatasetMapper gives a user who keeps their own loader.
    model = build_model(tiny_cfg(**{"MODEL.HNM.BUFFER.ENABLED": True}))
    model.train()
    inputs = batch()
    for x in inputs:
        del x["transforms"]
    with EventStorage(), pytest.raises(ValueError, match="has no 'transforms'.*BUFFER.ENABLED"):
        model(inputs)


def stock_roi_heads_arguments(cfg):
    """What LazyConfig's instantiate would pass: StandardROIHeads' arguments, stock predictor."""
    model = build_model(cfg)
    shapes = model.backbone.output_shape()
    return StandardROIHeads.from_config(cfg, shapes)


def with_hnm_predictor(arguments):
    """The arguments with the stock predictor replaced by an HNMFastRCNNOutputLayers, as a
    LazyConfig would name it."""
    predictor = arguments["box_predictor"]
    arguments["box_predictor"] = HNMFastRCNNOutputLayers(
        input_shape=predictor.cls_score.in_features,
        box2box_transform=predictor.box2box_transform,
        num_classes=predictor.num_classes,
    )
    return arguments


def test_ohem_built_without_from_config_samples_every_proposal():
    cfg = tiny_cfg(hnm=False)
    heads = HNMROIHeads(ohem_enabled=True, **with_hnm_predictor(stock_roi_heads_arguments(cfg)))
    # OHEM keeps B = the given batch size per image, and asks the stock sampler for all.
    assert heads.ohem_batch_size_per_image == cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE
    assert heads.batch_size_per_image > 10**9 and heads.positive_fraction == 1.0


def test_ohem_refuses_the_stock_predictor_naming_the_fix():
    arguments = stock_roi_heads_arguments(tiny_cfg(hnm=False))
    assert type(arguments["box_predictor"]) is FastRCNNOutputLayers
    with pytest.raises(HNMConfigError, match="ROI_OHEM.ENABLED.*HNMFastRCNNOutputLayers"):
        HNMROIHeads(ohem_enabled=True, **arguments)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"MODEL.KEYPOINT_ON": True}, "MODEL.KEYPOINT_ON"),
        pytest.param(
            {"MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": True},
            "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE",
            marks=needs_sigmoid_ce,
        ),
        ({"MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": True}, "TRAIN_ON_PRED_BOXES"),
    ],
)
def test_ohem_refuses_what_it_cannot_train(options, named):
    cfg = tiny_cfg(**{"MODEL.HNM.ROI_OHEM.ENABLED": True, **options})
    with pytest.raises(HNMConfigError, match=f"ROI_OHEM.ENABLED.*{named}"):
        build_model(cfg)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"MODEL.KEYPOINT_ON": True}, "MODEL.KEYPOINT_ON"),
        ({"MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": "giou"}, "'giou'.*use 'smooth_l1'"),
    ],
)
def test_ohem_built_without_from_config_refuses_what_it_cannot_train(options, named):
    arguments = with_hnm_predictor(stock_roi_heads_arguments(tiny_cfg(hnm=False, **options)))
    if "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE" in options:
        arguments["box_predictor"].box_reg_loss_type = "giou"
    with pytest.raises(HNMConfigError, match=f"ohem_enabled=True.*{named}"):
        HNMROIHeads(ohem_enabled=True, **arguments)


def test_buffer_in_a_model_that_does_not_pass_the_batch_refuses_at_the_first_step():
    # LazyConfig: GeneralizedRCNN with HNMROIHeads(hard_negative_buffer=...), no config check.
    model = build_model(tiny_cfg(hnm=False))
    arguments = stock_roi_heads_arguments(tiny_cfg(hnm=False))
    arguments["hard_negative_buffer"] = HardNegativeBuffer(
        capacity=64, per_image=4, max_age=100, dedup_iou=0.7, score_thresh=0.5
    )
    model.roi_heads = HNMROIHeads(**arguments)
    model.train()
    with EventStorage(), pytest.raises(RuntimeError, match="BUFFER.ENABLED.*'HNMRCNN'"):
        model(batch())


@needs_sigmoid_ce
def test_buffer_with_sigmoid_cross_entropy_scores_boxes_as_inference_does():
    cfg = tiny_cfg(
        **{
            "MODEL.HNM.BUFFER.ENABLED": True,
            "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0,
            "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": True,
        }
    )
    model = build_model(cfg)
    model.train()
    inputs = batch()
    with EventStorage():
        model(inputs)
    # A lone stored box, re-scored: its score is the sigmoid of its class logit, as the
    # predictor's predict_probs (which inference thresholds) computes it.
    heads = model.roi_heads
    boxes, scores = heads.hard_negative_buffer.boxes_of(image_key(inputs[1]["file_name"]))
    features = model.backbone(model.preprocess_image(inputs).tensor)
    per_image = [Boxes(torch.zeros(0, 4)), Boxes(boxes[:1])]  # the box is on the second image
    pooled = heads.box_pooler([features[f] for f in heads.box_in_features], per_image)
    logits, _ = heads.box_predictor(heads.box_head(pooled))
    assert scores[0].item() == pytest.approx(torch.sigmoid(logits[0, 0]).item(), abs=1e-5)


@pytest.mark.parametrize(
    "options, named",
    [
        (
            {
                "MODEL.ROI_HEADS.NAME": "CascadeROIHeads",
                "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": True,
            },
            "MODEL.ROI_HEADS.NAME = 'CascadeROIHeads'",
        ),
        ({"MODEL.PROPOSAL_GENERATOR.NAME": "RPN"}, "MODEL.PROPOSAL_GENERATOR.NAME = 'RPN'"),
    ],
)
def test_keys_no_built_class_reads_are_refused(options, named, synthetic_datasets):
    hnm_keys = {
        "MODEL.HNM.ROI_OHEM.ENABLED": True,
        "MODEL.HNM.RPN_OHEM.ENABLED": True,
        "MODEL.HNM.RPN_BG_WEIGHT": 0.5,
    }
    cfg = quick_cfg(**hnm_keys, **options)
    # Wherever an hnm_d2 piece is built from the config: the model or the train loader.
    with pytest.raises(HNMConfigError, match=named):
        build_model(cfg)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # nothing of hnm_d2's in the model
    with pytest.raises(HNMConfigError, match=named):
        build_hnm_train_loader(cfg)


@ROI_HEADS_REGISTRY.register()
class UsersOwnROIHeads(StandardROIHeads):
    """A project's own heads, which know nothing of MODEL.HNM."""


def test_a_users_own_heads_with_hnm_keys_are_refused_naming_the_fix(synthetic_datasets):
    cfg = quick_cfg(
        **{"MODEL.ROI_HEADS.NAME": "UsersOwnROIHeads", "MODEL.HNM.BUFFER.ENABLED": True}
    )
    expected = (
        "MODEL.HNM.BUFFER.ENABLED switched on, but MODEL.ROI_HEADS.NAME = 'UsersOwnROIHeads'.*"
        "'HNMROIHeads' or a subclass of it.*back to the default \\(False\\)"
    )
    with pytest.raises(HNMConfigError, match=expected):
        build_model(cfg)
