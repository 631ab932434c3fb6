"""Negative boxes ("this looks like an object, and is not"): the loaders fill the dataset-dict
field from a category of the file, the mapper validates and transforms them like annotations,
and the ROI heads train each as a background RoI every time its image is seen."""

import argparse
import logging

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from PIL import Image
from test_datasets import write_coco, write_images
from test_yolo import make_yolo_tree

from hnm_d2.data import (
    InvalidAnnotationError,
    NegativeAwareDatasetMapper,
    add_registration_arguments,
    is_negative_image,
    load_voc_with_negatives,
    load_yolo_with_negatives,
    register_coco_with_negatives,
    register_from_args,
)

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


# ------------------------------------------------------------------------------ loaders

# "fake" marks look-alikes: image 1 holds an object of each class and a look-alike, image 2 a
# look-alike only (a negative image), image 3 nothing.
COCO_CATEGORIES = [{"id": 1, "name": "a"}, {"id": 2, "name": "fake"}, {"id": 3, "name": "b"}]
COCO_IMAGES = [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 30} for i in (1, 2, 3)]
COCO_ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0},
    {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 2, 6, 4], "iscrowd": 0},
    {"id": 3, "image_id": 1, "category_id": 1, "bbox": [2, 8, 4, 4], "iscrowd": 0},
    {"id": 4, "image_id": 2, "category_id": 2, "bbox": [0, 0, 8, 8], "iscrowd": 0},
]


def coco_files(tmp_path):
    """The JSON with the "fake" category, and the same file without it."""
    write_images(tmp_path, COCO_IMAGES)
    with_fake = write_coco(tmp_path / "fake.json", COCO_IMAGES, COCO_ANNOTATIONS, COCO_CATEGORIES)
    without = write_coco(
        tmp_path / "plain.json",
        COCO_IMAGES,
        [a for a in COCO_ANNOTATIONS if a["category_id"] != 2],
        [c for c in COCO_CATEGORIES if c["name"] != "fake"],
    )
    return with_fake, without


def test_coco_category_becomes_negative_boxes_and_no_class(tmp_path, dataset_name, caplog):
    with_fake, without = coco_files(tmp_path)
    name = register_coco_with_negatives(
        dataset_name(), with_fake, tmp_path, negative_box_category="fake"
    )
    plain = register_coco_with_negatives(dataset_name(), without, tmp_path)
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        dicts = DatasetCatalog.get(name)
    # The classes, their contiguous ids and the annotations are those of the file without it.
    assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
    plain_dicts = DatasetCatalog.get(plain)
    assert [d["annotations"] for d in dicts] == [d["annotations"] for d in plain_dicts]
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {1: 0, 3: 1}
    assert MetadataCatalog.get(plain).thing_dataset_id_to_contiguous_id == {1: 0, 3: 1}
    assert [d["negative_boxes"] for d in dicts] == [[[10, 2, 16, 6]], [[0, 0, 8, 8]], []]
    assert [is_negative_image(d) for d in dicts] == [False, True, True]
    # COCOEvaluator would evaluate "fake" as a class of the JSON.
    assert not hasattr(MetadataCatalog.get(name), "json_file")
    assert "2 negative boxes on 2 images" in caplog.text


def test_coco_unknown_negative_category_names_the_file_and_its_categories(tmp_path):
    with_fake, _ = coco_files(tmp_path)
    with pytest.raises(ValueError) as info:
        register_coco_with_negatives("never_registered", with_fake, tmp_path, "error", "Fake")
    assert "never_registered" not in DatasetCatalog.list()
    for expected in (str(with_fake), "'Fake'", "['a', 'b', 'fake']", "--negative-box-category"):
        assert expected in str(info.value)


def write_voc(root, objects_of_image):
    """A VOC split "train" of 30 x 20 images: file id -> [(class name, xmin, ymin, xmax, ymax)]."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("\n".join(objects_of_image))
    for file_id, objects in objects_of_image.items():
        Image.new("RGB", (30, 20)).save(root / "JPEGImages" / f"{file_id}.jpg")
        xml_objects = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for n, x0, y0, x1, y1 in objects
        )
        (root / "Annotations" / f"{file_id}.xml").write_text(
            f"<annotation><size><width>30</width><height>20</height></size>{xml_objects}"
            "</annotation>"
        )
    return root


VOC_OBJECTS = {
    "img_1": [("a", 2, 2, 6, 6), ("fake", 11, 3, 16, 6), ("b", 3, 9, 6, 12)],
    "img_2": [("fake", 1, 1, 8, 8)],
    "img_3": [("b", 20, 10, 25, 15)],
}


def test_voc_class_becomes_negative_boxes_beside_the_chosen_ones(tmp_path):
    root = write_voc(tmp_path / "voc", VOC_OBJECTS)
    dicts = load_voc_with_negatives(root, "train", ["a"], negative_box_category="fake")
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[0], [], []]
    assert [d["negative_boxes"] for d in dicts] == [[[10.0, 2.0, 16.0, 6.0]], [[0, 0, 8, 8]], []]
    assert [is_negative_image(d) for d in dicts] == [False, True, True]
    assert "negative_boxes" not in load_voc_with_negatives(root, "train", ["a"])[0]


@pytest.mark.parametrize(
    "classes, category, message",
    [
        (["a"], "Fake", r"'Fake' is not one of its categories \['a', 'b', 'fake'\]"),
        (["a", "fake"], "fake", "both a chosen class"),
    ],
)
def test_voc_negative_category_absent_or_chosen_is_an_error(tmp_path, classes, category, message):
    root = write_voc(tmp_path / "voc", VOC_OBJECTS)
    with pytest.raises(ValueError, match=f"VOC {root} split train: .*{message}"):
        load_voc_with_negatives(root, "train", classes, negative_box_category=category)


def yolo_tree(tmp_path):
    """Images 1 (a, b and a look-alike), 2 (a look-alike only) and 3 (no label file) of
    100 x 50 px; the classes a, fake, b."""
    return make_yolo_tree(
        tmp_path / "yolo",
        images={"1.png": (100, 50), "2.png": (100, 50), "3.png": (100, 50)},
        labels={
            "1.txt": "0 0.5 0.5 0.2 0.4\n1 0.1 0.2 0.1 0.2\n2 0.8 0.5 0.1 0.2\n",
            "2.txt": "1 0.5 0.5 0.2 0.2\n",
        },
        names=("a", "fake", "b"),
    )


def test_yolo_class_becomes_negative_boxes_and_is_not_left_out(tmp_path, caplog):
    root = yolo_tree(tmp_path)
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        dicts = load_yolo_with_negatives(root, "train", negative_box_category="fake")
    # Every other class, with the ids of the file without "fake".
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[0, 1], [], []]
    np.testing.assert_allclose(dicts[0]["negative_boxes"], [[5, 5, 15, 15]])
    np.testing.assert_allclose(dicts[1]["negative_boxes"], [[40, 20, 60, 30]])
    assert dicts[2]["negative_boxes"] == []
    assert [is_negative_image(d) for d in dicts] == [False, True, True]
    assert "left out" not in caplog.text and "'negative boxes only': 1" in caplog.text


def test_yolo_negative_category_beside_chosen_classes_and_unknown(tmp_path):
    root = yolo_tree(tmp_path)
    dicts = load_yolo_with_negatives(root, "train", ["b"], negative_box_category="fake")
    assert [len(d["annotations"]) for d in dicts] == [1, 0, 0]
    assert [len(d["negative_boxes"]) for d in dicts] == [1, 1, 0]
    with pytest.raises(
        ValueError, match=r"data.yaml\): negative_box_category 'fak' is not one of its categories"
    ):
        load_yolo_with_negatives(root, "train", negative_box_category="fak")


def test_one_flag_gives_every_registered_format_its_negative_boxes(tmp_path, dataset_name):
    coco_json, _ = coco_files(tmp_path)
    voc_root, yolo_root = write_voc(tmp_path / "voc", VOC_OBJECTS), yolo_tree(tmp_path)
    coco, voc, yolo = dataset_name(), dataset_name(), dataset_name()
    args = add_registration_arguments(argparse.ArgumentParser()).parse_args(
        [
            "--register-coco", coco, str(coco_json), str(tmp_path),
            "--register-voc", voc, str(voc_root), "train", "a,b",
            "--register-yolo", yolo, str(yolo_root), "train",
            "--negative-box-category", "fake",
        ]
    )  # fmt: skip
    assert register_from_args(args) == [coco, voc, yolo]
    for name in (coco, voc, yolo):
        assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
        assert [len(d["negative_boxes"]) for d in DatasetCatalog.get(name)] == [1, 1, 0]
