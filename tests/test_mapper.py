"""NegativeAwareDatasetMapper: stock output on valid data, negatives, validation, read errors."""

import logging
import math

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from hnm_d2.config import HNMConfigError, add_hnm_config
from hnm_d2.data import (
    ImageReadError,
    InvalidAnnotationError,
    NegativeAwareDatasetMapper,
    register_voc,
)

WIDTH, HEIGHT = 64, 48
NUM_CLASSES = 2
RESIZE_AND_FLIP = [T.ResizeShortestEdge(24, max_size=1000), T.RandomFlip(prob=1.0)]
CROP = [T.RandomCrop("absolute", (20, 30))]
VALID = [
    {"bbox": [4.0, 6.0, 30.0, 40.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0},
    {"bbox": [32.0, 2.0, 20.0, 10.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1},
]
BAD_ANNOTATIONS = {
    "zero area": ([10, 10, 10, 10], BoxMode.XYXY_ABS, 0, "zero or negative area"),
    "reversed": ([30, 30, 10, 10], BoxMode.XYXY_ABS, 0, "zero or negative area"),
    "negative width": ([10, 10, -5, 8], BoxMode.XYWH_ABS, 0, "zero or negative area"),
    "single pixel": ([10, 10, 11, 11], BoxMode.XYXY_ABS, 0, "at most one pixel"),
    "nan": ([math.nan, 1, 5, 5], BoxMode.XYXY_ABS, 0, "NaN or inf"),
    "inf": ([1, 1, math.inf, 5], BoxMode.XYXY_ABS, 0, "NaN or inf"),
    "outside": ([70, 10, 90, 20], BoxMode.XYXY_ABS, 0, "outside"),
    "partly outside": ([50, 10, 66, 20], BoxMode.XYXY_ABS, 0, "outside"),
    "unknown category": ([1, 1, 5, 5], BoxMode.XYXY_ABS, 2, "category_id 2"),
    "negative category": ([1, 1, 5, 5], BoxMode.XYXY_ABS, -1, "category_id -1"),
}


def make_mapper(augmentations, policy="error", is_train=True, num_classes=NUM_CLASSES):
    return NegativeAwareDatasetMapper(
        is_train,
        augmentations=augmentations,
        image_format="BGR",
        invalid_annotation_policy=policy,
        num_classes=num_classes,
    )


def make_dict(path, annotations=VALID, image_id=7):
    record = {"file_name": str(path), "image_id": image_id, "height": HEIGHT, "width": WIDTH}
    if annotations is not None:
        record["annotations"] = [dict(a) for a in annotations]
    return record


def with_bad_annotation(path, case):
    bbox, mode, category_id, _ = BAD_ANNOTATIONS[case]
    bad = {"bbox": list(bbox), "bbox_mode": mode, "category_id": category_id}
    return make_dict(path, [VALID[0], bad, VALID[1]])


def assert_same_output(ours, stock):
    assert torch.equal(ours["image"], stock["image"])
    assert torch.equal(ours["instances"].gt_boxes.tensor, stock["instances"].gt_boxes.tensor)
    assert torch.equal(ours["instances"].gt_classes, stock["instances"].gt_classes)
    assert ours["image_id"] == stock["image_id"]


@pytest.mark.parametrize("augmentations", [RESIZE_AND_FLIP, CROP], ids=["resize_flip", "crop"])
def test_positive_image_matches_stock_mapper(write_image, augmentations):
    record = make_dict(write_image())
    stock = DatasetMapper(True, augmentations=augmentations, image_format="BGR")
    np.random.seed(3)
    expected = stock(record)
    np.random.seed(3)
    ours = make_mapper(augmentations)(record)
    assert_same_output(ours, expected)
    assert len(ours["instances"]) == len(expected["instances"])
    assert record["annotations"][0]["bbox"] == VALID[0]["bbox"], "the input dict was modified"


def test_mapper_from_config_matches_stock_on_synthetic_data(synthetic_datasets):
    cfg = get_cfg()
    add_hnm_config(cfg)
    cfg.DATASETS.TRAIN = (synthetic_datasets["train"],)
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    ours_mapper = NegativeAwareDatasetMapper(cfg, True)
    assert ours_mapper.num_classes == 1
    assert ours_mapper.invalid_annotation_policy == "error"
    record = DatasetCatalog.get(synthetic_datasets["train"])[0]
    assert record["annotations"], "the first synthetic training image is a positive one"
    for seed in (0, 1):  # the default RandomFlip flips on one seed or the other
        np.random.seed(seed)
        expected = DatasetMapper(cfg, True)(record)
        np.random.seed(seed)
        assert_same_output(ours_mapper(record), expected)


def test_from_config_rejects_bad_policy_and_disagreeing_classes(dataset_name, bccd_root):
    cfg = get_cfg()
    add_hnm_config(cfg)
    cfg.HNM.DATA.INVALID_ANNOTATIONS = "ignore"
    with pytest.raises(HNMConfigError, match="HNM.DATA.INVALID_ANNOTATIONS"):
        NegativeAwareDatasetMapper(cfg, True)
    cfg.HNM.DATA.INVALID_ANNOTATIONS = "drop"
    first = register_voc(dataset_name(), bccd_root, "test", ["Platelets"])
    second = register_voc(dataset_name(), bccd_root, "test", ["RBC"])
    cfg.DATASETS.TRAIN = (first, second)
    with pytest.raises(ValueError, match=f"{first}: \\['Platelets'\\]; {second}: \\['RBC'\\]"):
        NegativeAwareDatasetMapper(cfg, True)


def test_from_config_falls_back_to_model_num_classes():
    cfg = get_cfg()
    add_hnm_config(cfg)
    cfg.DATASETS.TRAIN = ("hnm_test_dataset_without_metadata",)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    assert NegativeAwareDatasetMapper(cfg, True).num_classes == 5


@pytest.mark.parametrize("annotations", [None, []], ids=["no_key", "empty_list"])
@pytest.mark.parametrize("augmentations", [RESIZE_AND_FLIP, CROP], ids=["resize_flip", "crop"])
def test_negative_image_gives_empty_instances(write_image, annotations, augmentations):
    out = make_mapper(augmentations)(make_dict(write_image(), annotations))
    instances = out["instances"]
    assert instances.gt_boxes.tensor.shape == (0, 4)
    assert instances.gt_boxes.tensor.dtype == torch.float32
    assert instances.gt_classes.shape == (0,)
    assert instances.gt_classes.dtype == torch.int64
    assert instances.image_size == tuple(out["image"].shape[1:])
    assert out["image_id"] == 7


def test_transforms_map_original_boxes_onto_output_boxes(write_image):
    record = make_dict(write_image())
    out = make_mapper(RESIZE_AND_FLIP)(record)
    original = np.array(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in VALID]
    )
    mapped = out["transforms"].apply_box(original)
    assert out["image"].shape[1:] == (24, 32)
    np.testing.assert_allclose(mapped, out["instances"].gt_boxes.tensor.numpy(), atol=1e-4)
    # Flipped horizontally at half scale: x' = 32 - x / 2.
    np.testing.assert_allclose(mapped[0], [32 - 15, 3, 32 - 2, 20], atol=1e-4)


def test_test_time_output_is_stock(write_image):
    record = make_dict(write_image())
    augmentations = [T.ResizeShortestEdge(24, max_size=1000)]
    ours = make_mapper(augmentations, is_train=False)(record)
    stock = DatasetMapper(False, augmentations=augmentations, image_format="BGR")(record)
    assert sorted(ours) == sorted(stock)
    assert torch.equal(ours["image"], stock["image"])
    assert "instances" not in ours and "transforms" not in ours


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_invalid_annotation_raises_under_error(write_image, case):
    path = write_image()
    with pytest.raises(InvalidAnnotationError) as info:
        make_mapper(RESIZE_AND_FLIP, "error")(with_bad_annotation(path, case))
    message = str(info.value)
    for expected in (str(path), "image id 7", "annotation #1", BAD_ANNOTATIONS[case][3]):
        assert expected in message
    assert "HNM.DATA.INVALID_ANNOTATIONS drop" in message


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_invalid_annotation_dropped_warned_and_counted_under_drop(write_image, caplog, case):
    path = write_image()
    mapper = make_mapper(RESIZE_AND_FLIP, "drop")
    with caplog.at_level(logging.WARNING, logger="hnm_d2.data.mapper"):
        with EventStorage() as storage:
            out = mapper(with_bad_annotation(path, case))
            mapper(with_bad_annotation(path, case))
    assert out["instances"].gt_classes.tolist() == [0, 1]
    assert mapper.num_dropped_annotations == 2
    assert storage.latest()["hnm/data/dropped_annotations"][0] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    for expected in (str(path), "image id 7", "annotation #1", BAD_ANNOTATIONS[case][3]):
        assert expected in warnings[0]


def test_drop_outside_event_storage_still_counts(write_image):
    mapper = make_mapper(RESIZE_AND_FLIP, "drop")
    out = mapper(with_bad_annotation(write_image(), "nan"))
    assert len(out["instances"]) == 2
    assert mapper.num_dropped_annotations == 1


def test_box_one_pixel_past_the_border_is_kept(write_image):
    touching = {"bbox": [40.0, 1.0, WIDTH + 1.0, HEIGHT + 1.0], "bbox_mode": BoxMode.XYXY_ABS}
    record = make_dict(write_image(), [{**touching, "category_id": 1}])
    out = make_mapper([T.NoOpTransform()])(record)
    assert out["instances"].gt_boxes.tensor.tolist() == [[40.0, 1.0, WIDTH, HEIGHT]]


@pytest.mark.parametrize("file_id", ["BloodImage_00338", "BloodImage_00343"])
def test_bccd_zero_area_boxes_are_found(bccd_root, dataset_name, caplog, file_id):
    classes = ["RBC", "WBC", "Platelets"]
    name = register_voc(dataset_name(), bccd_root, "trainval", classes)
    record = next(d for d in DatasetCatalog.get(name) if file_id in d["file_name"])
    # VOC's xmin == xmax, ymin == ymax: one pixel once converted to XYXY_ABS.
    zero_area = [
        i
        for i, a in enumerate(record["annotations"])
        if a["bbox"][2] - a["bbox"][0] == a["bbox"][3] - a["bbox"][1] == 1
    ]
    assert len(zero_area) == 1, "BCCD's README: one zero-area box in this file"
    augmentations = [T.ResizeShortestEdge(96, max_size=1000)]
    with pytest.raises(InvalidAnnotationError, match=f"annotation #{zero_area[0]} of image id"):
        make_mapper(augmentations, "error", num_classes=len(classes))(record)
    mapper = make_mapper(augmentations, "drop", num_classes=len(classes))
    with caplog.at_level(logging.WARNING, logger="hnm_d2.data.mapper"):
        out = mapper(record)
    assert mapper.num_dropped_annotations == 1
    assert len(out["instances"]) == len(record["annotations"]) - 1
    assert f"{file_id}.jpg" in caplog.text and "at most one pixel" in caplog.text


def test_missing_image_names_path_and_id(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(ImageReadError, match=f"{path}.*image id 7"):
        make_mapper(RESIZE_AND_FLIP)(make_dict(path))


@pytest.mark.parametrize("is_train", [True, False])
def test_corrupt_image_names_path_and_id(tmp_path, is_train):
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8 this is not a JPEG")
    with pytest.raises(ImageReadError, match=f"{path}.*image id 7"):
        make_mapper(RESIZE_AND_FLIP, is_train=is_train)(make_dict(path))


def test_training_mapper_needs_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        NegativeAwareDatasetMapper(True, augmentations=[], image_format="BGR")
