"""Dataset registration: BCCD as VOC, COCO JSON with negatives, negative folders, CLI flags."""

import argparse
import json
import logging

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode
from PIL import Image

from hnm_d2.data import (
    add_registration_arguments,
    is_negative_image,
    load_negative_folder,
    load_voc_with_negatives,
    name_id_offset,
    register_coco_with_negatives,
    register_from_args,
    register_negative_folder,
    register_subset,
    register_voc,
)

# Platelets in BCCD, per split: (images, positive, negative), counted from the XML files.
BCCD_PLATELETS = {"trainval": (292, 162, 130), "test": (72, 39, 33)}


def composition(dataset_dicts):
    negatives = sum(is_negative_image(d) for d in dataset_dicts)
    return len(dataset_dicts), len(dataset_dicts) - negatives, negatives


def write_coco(path, images, annotations=(), categories=({"id": 1, "name": "target"},)):
    path.write_text(
        json.dumps(
            {"images": images, "annotations": list(annotations), "categories": list(categories)}
        )
    )
    return path


def write_images(image_root, images):
    for image in images:
        Image.new("RGB", (image["width"], image["height"])).save(image_root / image["file_name"])


def test_bccd_platelets_split_into_201_positive_and_163_negative(bccd_root, dataset_name):
    totals = np.zeros(3, dtype=int)
    for split, expected in BCCD_PLATELETS.items():
        name = register_voc(dataset_name(), bccd_root, split, ["Platelets"])
        dicts = DatasetCatalog.get(name)
        assert composition(dicts) == expected
        assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0}
        assert MetadataCatalog.get(name).thing_classes == ["Platelets"]
        assert MetadataCatalog.get(name).evaluator_type == "coco"
        totals += composition(dicts)
    assert totals.tolist() == [364, 201, 163]


def test_voc_boxes_ids_and_class_order(bccd_root):
    dicts = load_voc_with_negatives(bccd_root, "test", ["WBC", "Platelets"])
    record = next(d for d in dicts if d["file_name"].endswith("BloodImage_00011.jpg"))
    assert record["image_id"] == 11
    assert (record["height"], record["width"]) == (480, 640)
    # The XML holds WBC (109, 119, 304, 332) and Platelets (85, 153, 122, 196) among RBCs;
    # 1-based inclusive pixels become [xmin - 1, ymin - 1, xmax, ymax].
    assert [(a["category_id"], a["bbox"]) for a in record["annotations"]] == [
        (0, [108.0, 118.0, 304.0, 332.0]),
        (1, [84.0, 152.0, 122.0, 196.0]),
    ]
    assert {a["bbox_mode"] for a in record["annotations"]} == {BoxMode.XYXY_ABS}
    assert len({d["image_id"] for d in dicts}) == len(dicts)


def test_voc_xml_without_size_names_the_file(tmp_path):
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("img_0042\n")
    (tmp_path / "Annotations" / "img_0042.xml").write_text("<annotation></annotation>")
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "JPEGImages" / "img_0042.jpg")
    xml_path = tmp_path / "Annotations" / "img_0042.xml"
    with pytest.raises(ValueError, match=f"{xml_path} \\(image id 42\\).*<size>"):
        load_voc_with_negatives(tmp_path, "train", ["a"])


def test_coco_json_keeps_negatives_with_contiguous_ids(tmp_path, dataset_name):
    images = [{"id": i, "file_name": f"{i}.png", "height": 10, "width": 10} for i in (5, 9, 2)]
    write_images(tmp_path, images)
    annotation = {"id": 1, "image_id": 9, "category_id": 7, "bbox": [1, 1, 4, 4], "iscrowd": 0}
    json_file = write_coco(
        tmp_path / "a.json", images, [annotation], [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}]
    )
    name = register_coco_with_negatives(dataset_name(), json_file, tmp_path)
    metadata = MetadataCatalog.get(name)
    assert metadata.thing_classes == ["a", "b"], "ordered by JSON category id"
    assert metadata.json_file == str(json_file)
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [2, 5, 9]
    assert [len(d["annotations"]) for d in dicts] == [0, 0, 1]
    assert dicts[2]["annotations"][0]["category_id"] == 1


def test_synthetic_coco_counts(synthetic_datasets):
    expected = {
        "train": (72, 48, 24),
        "val": (32, 16, 16),
        "test": (32, 16, 16),
        "pool": (48, 0, 48),
    }
    for split, name in synthetic_datasets.items():
        assert composition(DatasetCatalog.get(name)) == expected[split]
        assert MetadataCatalog.get(name).thing_classes == ["target"]


def test_duplicate_image_ids_are_rejected(tmp_path, dataset_name):
    images = [
        {"id": 3, "file_name": "a.png", "height": 10, "width": 10},
        {"id": 3, "file_name": "b.png", "height": 10, "width": 10},
    ]
    json_file = write_coco(tmp_path / "dup.json", images)
    with pytest.raises(ValueError, match=f"{json_file}: image id 3 .*'a.png'.*'b.png'"):
        register_coco_with_negatives(dataset_name(), json_file, tmp_path)


def test_json_without_images_is_rejected(tmp_path, dataset_name):
    json_file = write_coco(tmp_path / "empty.json", [])
    with pytest.raises(ValueError, match=f"{json_file} lists no images"):
        register_coco_with_negatives(dataset_name(), json_file, tmp_path)


def test_negative_folder_skips_non_images_with_a_warning(tmp_path, caplog, dataset_name):
    folder = tmp_path / "negatives"
    folder.mkdir()
    Image.new("RGB", (30, 20)).save(folder / "b.PNG")
    Image.new("RGB", (16, 12)).save(folder / "a.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "thumbs").mkdir()
    name = register_negative_folder(dataset_name(), folder, ["target"], id_offset=1000)
    with caplog.at_level(logging.WARNING, logger="hnm_d2.data.negative_folder"):
        dicts = DatasetCatalog.get(name)
    assert "skipped 2 entries" in caplog.text
    assert "notes.txt" in caplog.text and "thumbs" in caplog.text
    assert [(d["image_id"], d["height"], d["width"]) for d in dicts] == [
        (1000, 12, 16),
        (1001, 20, 30),
    ]
    assert all(d["annotations"] == [] for d in dicts)
    assert MetadataCatalog.get(name).thing_classes == ["target"]


def test_negative_folder_default_ids_differ_per_name(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert name_id_offset("pool_a") != name_id_offset("pool_b")
    assert name_id_offset("pool_a") == name_id_offset("pool_a")
    assert 10**9 <= name_id_offset("pool_a") <= 10**15
    dicts = load_negative_folder(tmp_path, name_id_offset("pool_a"))
    assert dicts[0]["image_id"] == name_id_offset("pool_a")


def test_negative_folder_size_follows_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 10)).save(tmp_path / "rotated.jpg", exif=exif)
    record = load_negative_folder(tmp_path, 0)[0]
    decoded = read_image(record["file_name"], format="BGR")
    assert (record["height"], record["width"]) == decoded.shape[:2] == (40, 10)


def test_negative_folder_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path} holds no"):
        load_negative_folder(tmp_path, 0)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=f"Cannot read image {tmp_path / 'broken.png'}"):
        load_negative_folder(tmp_path, 0)


def parse(*argv):
    return add_registration_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_command_line_flags_register_datasets(tmp_path, bccd_root, dataset_name):
    json_file = write_coco(
        tmp_path / "c.json", [{"id": 1, "file_name": "n.png", "height": 8, "width": 8}]
    )
    Image.new("RGB", (8, 8)).save(tmp_path / "n.png")
    folder = tmp_path / "negatives"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "n.png")
    coco, voc, negatives = dataset_name(), dataset_name(), dataset_name()
    args = parse(
        "--register-negatives", negatives, str(folder),
        "--register-voc", voc, str(bccd_root), "test", "WBC, Platelets",
        "--register-coco", coco, str(json_file), str(tmp_path),
    )  # fmt: skip
    assert register_from_args(args) == [coco, voc, negatives]
    assert MetadataCatalog.get(voc).thing_classes == ["WBC", "Platelets"]
    assert MetadataCatalog.get(negatives).thing_classes == ["target"], "from the COCO dataset"
    assert composition(DatasetCatalog.get(coco)) == (1, 0, 1)
    assert composition(DatasetCatalog.get(negatives)) == (1, 0, 1)


def test_negatives_classes_flag_and_missing_source(tmp_path, dataset_name):
    Image.new("RGB", (8, 8)).save(tmp_path / "n.png")
    name = dataset_name()
    register_from_args(
        parse("--register-negatives", name, str(tmp_path), "--negatives-classes", "a,b")
    )
    assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
    with pytest.raises(ValueError, match="--negatives-classes"):
        register_from_args(parse("--register-negatives", dataset_name(), str(tmp_path)))


def test_only_images_without_annotations_are_negative():
    assert is_negative_image({"annotations": []})
    assert is_negative_image({})
    assert not is_negative_image({"annotations": [{"iscrowd": 1}]}), "crowd regions show objects"


def test_subset_flags_register_positive_and_negative_views(bccd_root, dataset_name):
    voc, positives, negatives = dataset_name(), dataset_name(), dataset_name()
    register_from_args(
        parse(
            "--register-subset", positives, voc, "positives",
            "--register-subset", negatives, voc, "negatives",
            "--register-voc", voc, str(bccd_root), "trainval", "Platelets",
        )
    )  # fmt: skip
    # Platelets in BCCD trainval: 162 positive and 130 negative images.
    assert composition(DatasetCatalog.get(positives))[:2] == (162, 162)
    negative_dicts = DatasetCatalog.get(negatives)
    assert len(negative_dicts) == 130 and all(not d["annotations"] for d in negative_dicts)
    assert MetadataCatalog.get(positives).thing_classes == ["Platelets"]
    assert not hasattr(MetadataCatalog.get(negatives), "json_file")


def test_subset_errors_name_the_parent_and_kind(dataset_name):
    with pytest.raises(KeyError, match="'no_such_parent' is not a registered dataset"):
        register_subset(dataset_name(), "no_such_parent", "positives")
    with pytest.raises(ValueError, match="'everything' of .* is invalid"):
        register_subset(dataset_name(), "no_such_parent", "everything")


def test_voc_class_absent_from_the_split_is_an_error_listing_the_classes(bccd_root):
    with pytest.raises(ValueError, match=r"no object of class \['Platelet'\].*'Platelets'"):
        load_voc_with_negatives(str(bccd_root), "test", ["Platelet"])


def test_voc_split_of_ones_own_is_a_txt_file_outside_the_dataset(bccd_root, tmp_path):
    split_file = tmp_path / "my_split.txt"
    split_file.write_text("BloodImage_00011\nBloodImage_00001\n")
    dicts = load_voc_with_negatives(str(bccd_root), str(split_file), ["Platelets"])
    assert [d["image_id"] for d in dicts] == [11, 1]
    assert dicts[0]["file_name"] == str(bccd_root / "JPEGImages" / "BloodImage_00011.jpg")


def test_voc_missing_split_lists_the_splits_found(bccd_root):
    with pytest.raises(FileNotFoundError, match=r"nosuchsplit.txt does not exist.*'trainval'"):
        load_voc_with_negatives(str(bccd_root), "nosuchsplit", ["Platelets"])


@pytest.mark.parametrize(
    "content, message",
    [
        (
            [{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.9}],
            "top level is a JSON list.*"
            "is an object .*images.*annotations.*categories.*results file",
        ),
        ("images.json", "top level is a JSON string; a COCO instances file is an object"),
        ({"images": {"1": "a.png"}}, "'images' is a JSON object; it must be a list"),
    ],
)
def test_coco_file_of_the_wrong_shape_says_what_was_expected(tmp_path, content, message):
    json_file = tmp_path / "shape.json"
    json_file.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"{json_file}: .*{message}"):
        register_coco_with_negatives("never_registered", json_file, tmp_path)


def coco_with_a_missing_image(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png", "height": 8, "width": 8} for i in (1, 2, 3)]
    write_images(tmp_path, images[:2])
    annotation = {"id": 1, "image_id": 3, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 0}
    return write_coco(tmp_path / "c.json", images, [annotation])


def test_coco_image_missing_on_disk_fails_at_registration(tmp_path):
    json_file = coco_with_a_missing_image(tmp_path)
    with pytest.raises(
        ValueError,
        match=f"{json_file}: 1 of its 3 images are not on disk: "
        f"{tmp_path / '3.png'}.*missing_images='drop'",
    ):
        register_coco_with_negatives("never_registered", json_file, tmp_path)
    assert "never_registered" not in DatasetCatalog.list()


def test_coco_image_missing_on_disk_is_left_out_under_drop(tmp_path, caplog, dataset_name):
    json_file = coco_with_a_missing_image(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hnm_d2.data.registration"):
        name = register_coco_with_negatives(dataset_name(), json_file, tmp_path, "drop")
        dicts = DatasetCatalog.get(name)
    assert caplog.text.count("1 of its 3 images are not on disk") == 2, "at register and load"
    assert str(tmp_path / "3.png") in caplog.text
    assert [d["image_id"] for d in dicts] == [1, 2]
    # COCOEvaluator would evaluate on the whole JSON and count 3.png's object as missed.
    assert not hasattr(MetadataCatalog.get(name), "json_file")


def test_every_image_missing_is_an_error_under_either_policy(tmp_path):
    json_file = write_coco(
        tmp_path / "c.json", [{"id": 1, "file_name": "x.png", "height": 8, "width": 8}]
    )
    for policy in ("error", "drop"):
        with pytest.raises(ValueError, match=f"1 of its 1 images .* Check IMAGE_ROOT {tmp_path}"):
            register_coco_with_negatives("never_registered", json_file, tmp_path, policy)


def test_voc_image_missing_on_disk_fails_at_registration_or_is_left_out(
    bccd_root, tmp_path, caplog, dataset_name
):
    split_file = tmp_path / "split.txt"
    split_file.write_text("BloodImage_00011\nBloodImage_99999\n")
    missing = bccd_root / "JPEGImages" / "BloodImage_99999.jpg"
    with pytest.raises(ValueError, match=f"1 of its 2 images are not on disk: {missing}"):
        register_voc("never_registered", bccd_root, str(split_file), ["Platelets"])
    name = register_voc(dataset_name(), bccd_root, str(split_file), ["Platelets"], "drop")
    with caplog.at_level(logging.WARNING, logger="hnm_d2.data.registration"):
        dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [11], "the missing image's XML is not read"
    assert str(missing) in caplog.text


def test_missing_images_flag_applies_to_coco_and_voc(tmp_path, bccd_root, dataset_name):
    json_file = coco_with_a_missing_image(tmp_path)
    split_file = tmp_path / "split.txt"
    split_file.write_text("BloodImage_00011\nBloodImage_99999\n")
    coco, voc = dataset_name(), dataset_name()
    flags = ["--register-coco", coco, str(json_file), str(tmp_path)]
    flags += ["--register-voc", voc, str(bccd_root), str(split_file), "Platelets"]
    with pytest.raises(ValueError, match="not on disk"):
        register_from_args(parse(*flags))
    register_from_args(parse(*flags, "--missing-images", "drop"))
    assert len(DatasetCatalog.get(coco)) == 2 and len(DatasetCatalog.get(voc)) == 1
