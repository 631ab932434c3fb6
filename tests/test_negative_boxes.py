"""Negative boxes ("this looks like an object, and is not"): the loaders fill the dataset-dict
field from a category of the file, the mapper validates and transforms them like annotations,
and the ROI heads train each as a background RoI every time its image is seen."""

import logging

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage

from hnm_d2.data import InvalidAnnotationError, NegativeAwareDatasetMapper

WIDTH, HEIGHT = 64, 48
OBJECT = {"bbox": [4.0, 6.0, 30.0, 40.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
RESIZE_AND_FLIP = [T.ResizeShortestEdge(24, max_size=1000), T.RandomFlip(prob=1.0)]
# The top-left 30 x 20 px: a box below or right of it is cropped away.
CROP = [T.CropTransform(0, 0, 30, 20)]


def make_mapper(augmentations, policy="error"):
    return NegativeAwareDatasetMapper(
        True,
        augmentations=augmentations,
        image_format="BGR",
        invalid_annotation_policy=policy,
        num_classes=1,
    )


def make_dict(path, negative_boxes, annotations=(OBJECT,)):
    return {
        "file_name": str(path),
        "image_id": 7,
        "height": HEIGHT,
        "width": WIDTH,
        "annotations": [dict(a) for a in annotations],
        "negative_boxes": negative_boxes,
    }


# ------------------------------------------------------------------------------ mapper


def test_mapper_transforms_negative_boxes_as_it_transforms_annotations(write_image):
    out = make_mapper(RESIZE_AND_FLIP)(make_dict(write_image(), [OBJECT["bbox"]]))
    # Flipped at half scale, where the object with the same box went.
    assert torch.equal(out["negative_boxes"].tensor, out["instances"].gt_boxes.tensor)
    np.testing.assert_allclose(out["negative_boxes"].tensor[0], [32 - 15, 3, 32 - 2, 20])


def test_mapper_leaves_out_negative_boxes_the_crop_removed(write_image):
    inside, outside = [4.0, 6.0, 30.0, 40.0], [40.0, 25.0, 60.0, 45.0]
    out = make_mapper(CROP)(make_dict(write_image(), [inside, outside]))
    assert out["negative_boxes"].tensor.tolist() == [[4.0, 6.0, 30.0, 20.0]]


def test_a_negative_image_with_negative_boxes_has_empty_instances(write_image):
    out = make_mapper(RESIZE_AND_FLIP)(make_dict(write_image(), [[2, 2, 10, 10]], []))
    assert len(out["instances"]) == 0 and len(out["negative_boxes"]) == 1


def test_a_dict_without_negative_boxes_is_mapped_as_before(write_image):
    record = make_dict(write_image(), None)
    del record["negative_boxes"]
    assert "negative_boxes" not in make_mapper(RESIZE_AND_FLIP)(record)


BAD_BOXES = {
    "zero area": ([10, 10, 10, 30], "zero or negative area"),
    "outside": ([70, 10, 90, 20], "outside"),
    "nan": ([1, 1, float("nan"), 5], "NaN or inf"),
    "not four numbers": ([1, 2, 3], "not 4 numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_BOXES))
def test_invalid_negative_box_raises_naming_file_image_and_field(write_image, case):
    path = write_image()
    box, reason = BAD_BOXES[case]
    with pytest.raises(InvalidAnnotationError) as info:
        make_mapper(RESIZE_AND_FLIP)(make_dict(path, [[1, 1, 9, 9], box]))
    for expected in (str(path), "image id 7", "negative_boxes entry #1", reason, "drop"):
        assert expected in str(info.value)


def test_invalid_negative_box_is_dropped_and_counted_under_drop(write_image, caplog):
    mapper = make_mapper(RESIZE_AND_FLIP, "drop")
    with caplog.at_level(logging.WARNING, logger="hnm_d2.data.mapper"), EventStorage():
        out = mapper(make_dict(write_image(), [[70, 10, 90, 20], [2, 2, 10, 10]]))
    assert len(out["negative_boxes"]) == 1 and mapper.num_dropped_annotations == 1
    assert "negative_boxes entry #0" in caplog.records[0].getMessage()


def test_negative_boxes_that_are_no_list_name_the_contract(write_image):
    with pytest.raises(InvalidAnnotationError, match="'negative_boxes' is a ndarray.*XYXY_ABS"):
        make_mapper(RESIZE_AND_FLIP)(make_dict(write_image(), np.zeros((1, 4))))
