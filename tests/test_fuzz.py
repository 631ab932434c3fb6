"""Property-based tests of bad input: the mapper and the registration helpers either accept
and produce valid output or raise their documented error — never an unrelated exception,
never a hang, never data dropped silently."""

import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hnm_d2.data import (
    ImageReadError,
    InvalidAnnotationError,
    NegativeAwareDatasetMapper,
    register_coco_with_negatives,
    register_negative_folder,
)

IMAGE_W, IMAGE_H, NUM_CLASSES = 40, 30, 2
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

coordinates = st.one_of(
    st.floats(min_value=-100, max_value=100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-50, max_value=10**9),
    st.sampled_from([0, 1, 29, 30, 40, 41]),
)
boxes = st.one_of(
    st.lists(coordinates, min_size=4, max_size=4),
    st.lists(coordinates, min_size=0, max_size=6),
    st.sampled_from(["0 0 10 10", None, {"x": 1}]),
)
annotations = st.fixed_dictionaries(
    {},
    optional={
        "bbox": boxes,
        "bbox_mode": st.sampled_from(
            [BoxMode.XYXY_ABS, BoxMode.XYWH_ABS, BoxMode.XYXY_REL, 0, 1, 7, "xyxy", None]
        ),
        "category_id": st.one_of(
            st.integers(min_value=-2, max_value=3), st.sampled_from([0.0, "0", None, True])
        ),
        "iscrowd": st.sampled_from([0, 1]),
    },
)


def is_valid(annotation):
    """Independent oracle: the documented validity rules, written plainly."""
    category = annotation.get("category_id")
    if type(category) is not int or not 0 <= category < NUM_CLASSES:
        return False
    mode, bbox = annotation.get("bbox_mode"), annotation.get("bbox")
    if mode not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS, 0, 1) or mode is True or mode is False:
        return False
    if not isinstance(bbox, list) or len(bbox) != 4:
        return False
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
        return False
    x0, y0, a, b = (float(v) for v in bbox)
    x1, y1 = (a, b) if BoxMode(mode) == BoxMode.XYXY_ABS else (x0 + a, y0 + b)
    w, h = x1 - x0, y1 - y0
    return w > 0 and h > 0 and w * h > 1 and x0 >= -1 and y0 >= -1 and x1 <= 41 and y1 <= 31


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "image.png"
    Image.fromarray(np.full((IMAGE_H, IMAGE_W, 3), 128, np.uint8)).save(path)
    return str(path)


def make_mapper(policy):
    return NegativeAwareDatasetMapper(
        True,
        augmentations=[T.ResizeShortestEdge(60, 100), T.RandomFlip()],
        image_format="BGR",
        invalid_annotation_policy=policy,
        num_classes=NUM_CLASSES,
    )


def assert_valid_instances(instances):
    boxes = instances.gt_boxes.tensor
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
    assert torch.isfinite(boxes).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    h, w = instances.image_size
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    classes = instances.gt_classes
    assert classes.dtype == torch.int64 and ((classes >= 0) & (classes < NUM_CLASSES)).all()


@FUZZ
@given(annos=st.lists(annotations, max_size=5))
def test_error_policy_accepts_valid_or_raises_the_documented_error(image_file, annos):
    record = {"file_name": image_file, "image_id": 7, "annotations": annos}
    try:
        out = make_mapper("error")(record)
    except InvalidAnnotationError as err:
        assert "image id 7" in str(err) and image_file in str(err)
        assert not all(is_valid(a) for a in annos)
        return
    assert all(is_valid(a) for a in annos)
    kept = [a for a in annos if a.get("iscrowd", 0) == 0]
    assert len(out["instances"]) == len(kept)
    assert_valid_instances(out["instances"])


@FUZZ
@given(annos=st.lists(annotations, max_size=5))
def test_drop_policy_keeps_exactly_the_valid_annotations_and_counts_the_rest(image_file, annos):
    mapper = make_mapper("drop")
    record = {"file_name": image_file, "image_id": 7, "annotations": annos}
    out = mapper(record)
    valid = [a for a in annos if is_valid(a)]
    assert mapper.num_dropped_annotations == len(annos) - len(valid)
    assert len(out["instances"]) == sum(a.get("iscrowd", 0) == 0 for a in valid)
    assert_valid_instances(out["instances"])


@FUZZ
@given(annotation=st.one_of(st.none(), st.integers(), st.text(max_size=3), st.lists(st.integers())))
def test_an_annotation_that_is_not_a_dict_is_reported(image_file, annotation):
    record = {"file_name": image_file, "image_id": 3, "annotations": [annotation]}
    with pytest.raises(InvalidAnnotationError, match="annotation #0 of image id 3"):
        make_mapper("error")(record)
    mapper = make_mapper("drop")
    assert len(mapper(record)["instances"]) == 0 and mapper.num_dropped_annotations == 1


@pytest.mark.parametrize(
    "content", [b"", b"\x89PNG\r\n\x1a\n truncated", b"not an image at all", b"GIF89a"]
)
def test_corrupt_or_truncated_image_files_raise_naming_the_path(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    record = {"file_name": str(path), "image_id": 5, "annotations": []}
    with pytest.raises(ImageReadError, match=f"{path}.*image id 5"):
        make_mapper("error")(record)


def test_truncated_real_image_raises_naming_the_path(tmp_path, image_file):
    data = open(image_file, "rb").read()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        make_mapper("error")({"file_name": str(path), "image_id": 1, "annotations": []})


image_entries = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.integers(min_value=0, max_value=5), st.sampled_from(["a", None, 1.5])),
        "file_name": st.sampled_from(["a.png", "b.png", "", None, 3]),
        "height": st.one_of(st.integers(min_value=-1, max_value=50), st.sampled_from(["30", None])),
        "width": st.one_of(st.integers(min_value=-1, max_value=50), st.sampled_from([None])),
    },
)
coco_annotations = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(min_value=1, max_value=100),
        "image_id": st.one_of(st.integers(min_value=0, max_value=6), st.just("x")),
        "category_id": st.sampled_from([1, 2, 9, None, "1"]),
        "bbox": boxes,
        "iscrowd": st.sampled_from([0, 1]),
        "area": st.just(10.0),
    },
)


@FUZZ
@given(
    images=st.lists(image_entries, max_size=4),
    annos=st.lists(coco_annotations, max_size=4),
    categories=st.sampled_from(
        [[{"id": 1, "name": "a"}], [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], [], None]
    ),
)
def test_coco_registration_loads_every_image_or_raises_naming_the_file(
    tmp_path, images, annos, categories
):
    json_file = tmp_path / "fuzz.json"
    # The file names the entries may take are on disk: registration checks that they are.
    for file_name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / file_name)
    content = {"images": images, "annotations": annos}
    if categories is not None:
        content["categories"] = categories
    json_file.write_text(json.dumps(content))
    name = "fuzz_coco"
    DatasetCatalog.pop(name, None)
    MetadataCatalog.pop(name, None)
    try:
        register_coco_with_negatives(name, str(json_file), str(tmp_path))
        dicts = DatasetCatalog.get(name)
    except ValueError as err:
        assert str(json_file) in str(err)
        return
    finally:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
    assert len(dicts) == len(images)
    assert len({d["image_id"] for d in dicts}) == len(dicts)
    assert sum(len(d["annotations"]) for d in dicts) == len(annos), "no annotation dropped"


def test_coco_json_with_no_images_is_rejected(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="empty.json lists no images"):
        register_coco_with_negatives("fuzz_empty", str(path), str(tmp_path))
        DatasetCatalog.get("fuzz_empty")


def test_negative_folder_with_only_non_images_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=str(tmp_path)):
        register_negative_folder("fuzz_folder", str(tmp_path), ["a"])
        DatasetCatalog.get("fuzz_folder")
    DatasetCatalog.pop("fuzz_folder", None)
    MetadataCatalog.pop("fuzz_folder", None)
