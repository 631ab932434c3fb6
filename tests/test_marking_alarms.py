"""benchmarks/marking_alarms.py: the first model's alarms at a threshold become negative boxes
that hnm_d2's COCO loader reads back on the right images, and the count of marked alarms a
later model still fires on."""

import json

import pytest
from detectron2.structures import BoxMode
from helpers import load_script

from hnm_d2.data import load_coco_with_negatives
from hnm_d2.data.synthetic import generate_synthetic_coco


@pytest.fixture(scope="module")
def marking():
    return load_script("benchmarks/marking_alarms.py")


@pytest.fixture(scope="module")
def split_jsons(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("marking_data")
    return data_dir, {
        "train": generate_synthetic_coco(str(data_dir), 2, 1, image_size=64, split="train"),
        "held": generate_synthetic_coco(str(data_dir), 1, 2, image_size=64, split="held"),
    }


def held_ids(split_jsons):
    with open(split_jsons["held"]) as f:
        images = json.load(f)["images"]
    return [image["id"] for image in images]  # the positive first, then two negatives


def test_alarms_are_detections_on_negative_images_at_or_above_the_threshold(marking, split_jsons):
    _, jsons = split_jsons
    positive, negative, other_negative = held_ids(jsons)
    with open(jsons["held"]) as f:
        negatives = marking.negative_image_ids(json.load(f))
    assert negatives == {negative, other_negative}
    detections = [
        {"image_id": positive, "bbox": [0, 0, 10, 10], "score": 0.9},  # not a negative image
        {"image_id": negative, "bbox": [1, 2, 10, 20], "score": 0.5},  # at the threshold
        {"image_id": negative, "bbox": [30, 30, 5, 5], "score": 0.49},  # below it
        {"image_id": other_negative, "bbox": [4, 4, 8, 8], "score": 0.7},
    ]
    assert marking.alarms_at(detections, negatives, 0.5) == {
        negative: [[1, 2, 11, 22]],
        other_negative: [[4, 4, 12, 12]],
    }


def test_marked_alarms_load_as_negative_boxes_of_their_images(marking, split_jsons, tmp_path):
    data_dir, jsons = split_jsons
    _, negative, _ = held_ids(jsons)
    alarms = {negative: [[1.0, 2.0, 11.0, 22.0], [30.0, 30.0, 40.0, 44.0]]}
    plain, marked = tmp_path / "plain.json", tmp_path / "marked.json"
    plain.write_text(json.dumps(marking.merged_training_set(jsons)))
    marked.write_text(json.dumps(marking.merged_training_set(jsons, alarms)))

    plain_records = load_coco_with_negatives(str(plain), str(data_dir), "marking_plain")
    marked_records = load_coco_with_negatives(
        str(marked), str(data_dir), "marking_marked", negative_box_category="false alarm"
    )
    assert len(plain_records) == len(marked_records) == 6  # train 2 + 1, held 1 + 2
    for before, after in zip(plain_records, marked_records):
        assert after["file_name"] == before["file_name"]
        assert after["annotations"] == before["annotations"]  # the objects are untouched
        assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in after["annotations"])
        expected = alarms.get(after["image_id"], [])
        assert after["negative_boxes"] == expected  # exact: whole-pixel boxes
        assert "negative_boxes" not in before
    assert {r["file_name"].split("/")[-2] for r in marked_records} == {"train", "held"}


def test_marks_still_fired_on_counts_marked_boxes_a_detection_overlaps(marking):
    marked = {7: [[0, 0, 10, 10], [50, 50, 60, 60]], 8: [[0, 0, 20, 20]]}
    fired = {
        7: [[1, 0, 11, 10]],  # IoU 0.82 with the first mark; the second is left alone
        8: [[0, 0, 10, 10]],  # IoU 0.25: a different box
        9: [[0, 0, 10, 10]],  # an image without marks
    }
    assert marking.marks_still_fired_on(marked, fired) == 1
    assert marking.marks_still_fired_on(marked, marked) == 3
    assert marking.marks_still_fired_on(marked, {}) == 0
