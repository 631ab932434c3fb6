"""YOLO-format datasets: tiny trees made here for every rule, and TXL-PBC by path."""

import argparse
import logging
import os
import re
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode
from PIL import Image

from hnm_d2.data import (
    InvalidAnnotationError,
    NegativeAwareDatasetMapper,
    add_registration_arguments,
    is_negative_image,
    load_yolo_with_negatives,
    name_id_offset,
    register_from_args,
    register_yolo_with_negatives,
)

YOLO_LOGGER = "hnm_d2.data.yolo"
COMPOSITION_LOGGER = "hnm_d2.data.registration"


def make_yolo_tree(root: Path, images: dict, labels: dict, names=("a", "b"), split="train"):
    """A YOLO dataset under ``root``: ``images`` maps a relative path to (width, height),
    ``labels`` a relative path to its text; data.yaml names ``names`` unless it is None."""
    for relative, (width, height) in images.items():
        path = root / "images" / split / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, height)).save(path)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for relative, text in labels.items():
        path = root / "labels" / split / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if names is not None:
        (root / "data.yaml").write_text(f"names: {list(names)}\n")
    return root


def composition(dataset_dicts):
    negatives = sum(is_negative_image(d) for d in dataset_dicts)
    return len(dataset_dicts), len(dataset_dicts) - negatives, negatives


@pytest.fixture
def tree(tmp_path):
    """Four images: a (a box of class 0 and one of class 1), b (an empty label file),
    c (no label file), d (class 1 only); a LabelImg classes.txt, a label file without an
    image, and two files in formats the loader skips."""
    root = make_yolo_tree(
        tmp_path / "yolo",
        images={"a.png": (100, 50), "b.jpg": (20, 20), "c.png": (30, 10), "d.bmp": (40, 40)},
        labels={
            "a.txt": "0 0.5 0.5 0.2 0.4\n1 0.25 0.5 0.1 0.2\n",
            "b.txt": "\n  \n",
            "d.txt": "1 0.5 0.5 0.5 0.5\n",
            "orphan.txt": "0 0.5 0.5 0.1 0.1\n",
            "classes.txt": "a\nb\n",
        },
    )
    (root / "images" / "train" / "notes.gif").write_bytes(b"GIF89a")
    (root / "images" / "train" / "e.webp").write_bytes(b"RIFF")
    return root


def test_images_without_label_file_or_with_an_empty_one_are_negatives(tree, caplog):
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        dicts = load_yolo_with_negatives(tree, "train", id_offset=100)
    assert [Path(d["file_name"]).name for d in dicts] == ["a.png", "b.jpg", "c.png", "d.bmp"]
    assert [d["image_id"] for d in dicts] == [100, 101, 102, 103]
    assert [(d["height"], d["width"]) for d in dicts] == [(50, 100), (20, 20), (10, 30), (40, 40)]
    assert composition(dicts) == (4, 2, 2)
    # cx 0.5 cy 0.5 w 0.2 h 0.4 of a 100x50 image: x 40..60, y 15..35.
    assert [(a["category_id"], a["bbox"]) for a in dicts[0]["annotations"]] == [
        (0, [40.0, 15.0, 60.0, 35.0]),
        (1, [20.0, 20.0, 30.0, 30.0]),
    ]
    assert {a["bbox_mode"] for d in dicts for a in d["annotations"]} == {BoxMode.XYXY_ABS}
    assert "'no label file': 1" in caplog.text and "'an empty label file': 1" in caplog.text


def test_label_files_without_image_and_skipped_formats_are_counted_and_named(tree, caplog):
    with caplog.at_level(logging.WARNING, logger=YOLO_LOGGER):
        load_yolo_with_negatives(tree, "train")
    assert "skipped 2 files" in caplog.text
    assert "e.webp" in caplog.text and "notes.gif" in caplog.text
    assert "1 label files have no image" in caplog.text and "orphan.txt" in caplog.text
    assert "classes.txt" not in caplog.text, "LabelImg's class list is not a label file"


def test_class_subset_makes_images_without_it_negatives_and_counts_the_left_out_boxes(tree, caplog):
    with caplog.at_level(logging.INFO, logger=YOLO_LOGGER):
        dicts = load_yolo_with_negatives(tree, "train", ["b"])
    assert [len(d["annotations"]) for d in dicts] == [1, 0, 0, 1]
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0}
    assert dicts[0]["annotations"][0]["bbox"] == [20.0, 20.0, 30.0, 30.0]
    assert "left out 1 boxes of the classes not chosen: {'a': 1}" in caplog.text

    with caplog.at_level(logging.INFO, logger=YOLO_LOGGER):
        dicts = load_yolo_with_negatives(tree, "train", ["a"])
    assert composition(dicts) == (4, 1, 3), "d holds only class b: a negative for class a"
    assert "'no box of a chosen class': 1" in caplog.text


def test_class_subset_order_sets_the_category_ids(tree):
    dicts = load_yolo_with_negatives(tree, "train", ["b", "a"])
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1, 0]


def test_unknown_class_name_lists_the_names_and_their_file(tree):
    with pytest.raises(ValueError, match=r"class \['B'\] is not among the classes of .*data.yaml"):
        register_yolo_with_negatives("never_registered", tree, "train", ["B"])
    assert "never_registered" not in DatasetCatalog.list()


@pytest.mark.parametrize(
    "yaml_names",
    ["names: {0: a, 1: b}", "names:\n  '1': b\n  '0': a", "nc: 2\nnames: [a, b]", "names: [a, b]"],
)
def test_names_from_data_yaml_as_a_list_or_a_dict(tmp_path, yaml_names, dataset_name):
    root = make_yolo_tree(tmp_path, {"x.png": (8, 8)}, {"x.txt": "1 0.5 0.5 0.5 0.5"}, None)
    (root / "data.yaml").write_text(yaml_names)
    name = register_yolo_with_negatives(dataset_name(), root, "train")
    assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
    assert DatasetCatalog.get(name)[0]["annotations"][0]["category_id"] == 1


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("names: {0: a, 2: b}", r"keys of 'names' are \[0, 2\]; they must be the class indices"),
        ("nc: 3\nnames: [a, b]", "'nc' is 3 but 'names' has 2 entries"),
        ("names: a", "'names' is 'a'; give a list"),
        ("names: [a, b", "is not valid YAML"),
    ],
)
def test_malformed_data_yaml_names_the_file_and_the_field(tmp_path, yaml_text, message):
    root = make_yolo_tree(tmp_path, {"x.png": (8, 8)}, {}, None)
    (root / "data.yaml").write_text(yaml_text)
    with pytest.raises(ValueError, match=f"{root / 'data.yaml'}.*{message}"):
        load_yolo_with_negatives(root, "train")


def test_names_from_classes_txt_when_there_is_no_data_yaml(tmp_path):
    root = make_yolo_tree(tmp_path, {"x.png": (8, 8)}, {"classes.txt": "cell\nplatelet\n"}, None)
    # LabelImg's classes.txt in the label folder names the classes ...
    assert load_yolo_with_negatives(root, "train", ["platelet"])[0]["annotations"] == []
    # ... and one in ROOT comes first, as data.yaml does before both.
    (root / "classes.txt").write_text("x\ny\n")
    with pytest.raises(ValueError, match=r"\['platelet'\] is not among the classes of .*"):
        load_yolo_with_negatives(root, "train", ["platelet"])
    (root / "data.yaml").write_text("names: [cell, platelet]")
    assert load_yolo_with_negatives(root, "train", ["platelet"])


def test_no_class_names_anywhere_says_where_it_looked(tmp_path):
    root = make_yolo_tree(tmp_path, {"x.png": (8, 8)}, {}, None)
    with pytest.raises(FileNotFoundError, match="no class names.*data.yaml.*classes.txt"):
        load_yolo_with_negatives(root, "train")


def test_malformed_rows_are_all_listed_with_file_line_and_field(tmp_path):
    label_text = "\n".join(
        [
            "0 0.5 0.5 0.2 0.2",  # line 1 fine
            "0 0.5 0.5 0.2",  # line 2: four values
            "1 0.5 abc 0.2 0.2",  # line 3: cy not a number
            "0.5 0.5 0.5 0.2 0.2",  # line 4: class not an index
            "0 0.1 0.1 0.9 0.1 0.9 0.9",  # line 5: a polygon row
        ]
    )
    root = make_yolo_tree(tmp_path, {"x.png": (8, 8)}, {"x.txt": label_text})
    label = root / "labels" / "train" / "x.txt"
    with pytest.raises(ValueError, match="4 rows are not boxes") as raised:
        load_yolo_with_negatives(root, "train")
    message = str(raised.value)
    assert f"{label} line 2 '0 0.5 0.5 0.2': 4 values where a box row has 5" in message
    assert f"{label} line 3 '1 0.5 abc 0.2 0.2': cy 'abc' is not a number" in message
    assert f"{label} line 4 '0.5 0.5 0.5 0.2 0.2': class '0.5' is not a class index" in message
    assert f"{label} line 5" in message and "polygon of the segmentation format" in message
    assert "Fix or delete these lines" in message


def test_a_label_file_that_is_not_text_is_named(tmp_path):
    root = make_yolo_tree(tmp_path, {"x.png": (8, 8)}, {})
    (root / "labels" / "train" / "x.txt").write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    with pytest.raises(ValueError, match=f"{root / 'labels' / 'train' / 'x.txt'} is not a text"):
        load_yolo_with_negatives(root, "train")


def test_class_index_written_as_a_float_and_a_byte_order_mark_are_read(tmp_path):
    root = make_yolo_tree(tmp_path, {"x.png": (10, 10)}, {})
    (root / "labels" / "train" / "x.txt").write_bytes("\ufeff1.0 0.5 0.5 0.2 0.2\n".encode())
    annotation = load_yolo_with_negatives(root, "train")[0]["annotations"][0]
    assert annotation["category_id"] == 1 and "origin" not in annotation


BAD_ROWS = {
    "class index out of range": ("5 0.5 0.5 0.2 0.2", "category_id 5 is outside [0, 2)"),
    "box outside the image": ("0 0.95 0.5 0.2 0.2", "extends more than 1 px outside"),
    "zero size": ("1 0.5 0.5 0 0.2", "zero or negative area"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_invalid_rows_meet_the_mapper_policy_named_by_file_and_line(
    tmp_path, case, caplog, dataset_name
):
    row, reason = BAD_ROWS[case]
    root = make_yolo_tree(tmp_path, {"x.png": (40, 30)}, {"x.txt": f"0 0.5 0.5 0.25 0.25\n{row}\n"})
    name = register_yolo_with_negatives(dataset_name(), root, "train")
    where = f"{root / 'labels' / 'train' / 'x.txt'} line 2 {row!r}"
    with caplog.at_level(logging.WARNING, logger=COMPOSITION_LOGGER):
        (record,) = DatasetCatalog.get(name)
    assert "1 invalid annotations" in caplog.text and where in caplog.text
    assert reason in caplog.text and "class cx cy w h" in caplog.text
    assert len(record["annotations"]) == 2, "kept for the mapper's policy"

    expected = f"{re.escape(where)}.*{re.escape(reason)}.*INVALID_ANNOTATIONS drop"
    with pytest.raises(InvalidAnnotationError, match=expected):
        mapper("error")(record)
    dropping = mapper("drop")
    assert len(dropping(record)["instances"]) == 1
    assert dropping.num_dropped_annotations == 1


def mapper(policy):
    return NegativeAwareDatasetMapper(
        True, augmentations=[], image_format="BGR", invalid_annotation_policy=policy, num_classes=2
    )


def test_image_size_and_boxes_follow_exif_orientation(tmp_path):
    root = make_yolo_tree(tmp_path, {}, {"turned.txt": "0 0.5 0.25 0.5 0.5"})
    (root / "images" / "train").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide and 10 high, shown turned by 90 degrees: 10 x 40
    Image.new("RGB", (40, 10)).save(root / "images" / "train" / "turned.jpg", exif=exif)
    (record,) = load_yolo_with_negatives(root, "train")
    decoded = read_image(record["file_name"], format="BGR")
    assert (record["height"], record["width"]) == decoded.shape[:2] == (40, 10)
    # Normalised to the image as shown (ultralytics' exif_size): x 2.5..7.5, y 0..20.
    assert record["annotations"][0]["bbox"] == [2.5, 0.0, 7.5, 20.0]


def test_nested_folders_and_the_split_first_layout(tmp_path):
    for split_first in (False, True):
        root = tmp_path / f"split_first_{split_first}"
        images, labels = root / "images" / "val", root / "labels" / "val"
        if split_first:  # Roboflow's export: ROOT/val/images, ROOT/val/labels
            images, labels = root / "val" / "images", root / "val" / "labels"
        (images / "day").mkdir(parents=True)
        (labels / "day").mkdir(parents=True)
        Image.new("RGB", (10, 10)).save(images / "day" / "x.png")
        (labels / "day" / "x.txt").write_text("0 0.5 0.5 0.2 0.2")
        (root / "data.yaml").write_text("names: [a]")
        (record,) = load_yolo_with_negatives(root, "val")
        assert record["file_name"] == str(images / "day" / "x.png")
        assert len(record["annotations"]) == 1


def test_missing_split_lists_the_splits_found(tree):
    with pytest.raises(FileNotFoundError, match=r"split 'valid'.*splits found: \['train'\]"):
        register_yolo_with_negatives("never_registered", tree, "valid")


def test_split_without_label_folder_is_all_negatives_with_a_warning(tmp_path, caplog):
    root = make_yolo_tree(tmp_path, {"x.png": (8, 8)}, {})
    (root / "labels" / "train").rmdir()
    with caplog.at_level(logging.WARNING, logger=YOLO_LOGGER):
        assert composition(load_yolo_with_negatives(root, "train")) == (1, 0, 1)
    assert "does not exist: every image" in caplog.text


def test_registration_sets_metadata_and_numbers_from_the_name(tree, dataset_name):
    name = dataset_name()
    assert register_yolo_with_negatives(name, tree, "train", ["b"]) == name
    metadata = MetadataCatalog.get(name)
    assert metadata.thing_classes == ["b"]
    assert metadata.evaluator_type == "coco"
    assert metadata.image_root == str(tree / "images" / "train")
    assert (metadata.dirname, metadata.split) == (str(tree), "train")
    assert DatasetCatalog.get(name)[0]["image_id"] == name_id_offset(name)


def parse(*argv):
    return add_registration_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_register_yolo_flag_with_and_without_classes(tree, dataset_name, caplog):
    every_class, chosen, negatives = dataset_name(), dataset_name(), dataset_name()
    args = parse(
        "--register-yolo", every_class, str(tree), "train",
        "--register-yolo", chosen, str(tree), "train", "b, a",
        "--register-negatives", negatives, str(tree / "images" / "train"),
    )  # fmt: skip
    assert register_from_args(args) == [every_class, chosen, negatives]
    assert MetadataCatalog.get(every_class).thing_classes == ["a", "b"]
    assert MetadataCatalog.get(chosen).thing_classes == ["b", "a"]
    assert MetadataCatalog.get(negatives).thing_classes == ["a", "b"], "from the YOLO dataset"


def test_register_yolo_flag_that_swallowed_config_options_says_so(capsys):
    with pytest.raises(SystemExit):
        parse("--register-yolo", "n", "root", "train", "DATASETS.TRAIN", "('n',)")
    error = capsys.readouterr().err
    assert "--register-yolo takes NAME ROOT SPLIT [CLASS[,CLASS]], got 5 values" in error
    assert "put another flag between them" in error


# TXL-PBC's README: per split, images / with a platelet / without one / platelet boxes.
TXL_PBC_PLATELETS = {
    "train": (1008, 364, 644, 596),
    "val": (288, 108, 180, 179),
    "test": (144, 52, 92, 76),
}
TXL_PBC_SIZES = {(640, 480), (416, 416), (360, 363), (366, 369), (575, 575)}


@pytest.fixture(scope="module")
def txl_pbc_root():
    """TXL-PBC in YOLO layout: $HNM_TXL_PBC_ROOT, else shared/data/txl_pbc beside the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "txl_pbc"
    root = Path(os.environ.get("HNM_TXL_PBC_ROOT", default))
    if not (root / "data.yaml").is_file():
        pytest.skip(f"TXL-PBC not found at {root}: set HNM_TXL_PBC_ROOT to a copy of it.")
    return root


def test_txl_pbc_platelets_match_its_readme(txl_pbc_root, dataset_name, caplog):
    totals = [0, 0]
    for split, (images, positive, negative, boxes) in TXL_PBC_PLATELETS.items():
        name = register_yolo_with_negatives(dataset_name(), txl_pbc_root, split, ["Platelets"])
        with caplog.at_level(logging.WARNING, logger="hnm_d2"):
            dicts = DatasetCatalog.get(name)
        assert composition(dicts) == (images, positive, negative), split
        assert sum(len(d["annotations"]) for d in dicts) == boxes, split
        assert {(d["width"], d["height"]) for d in dicts} <= TXL_PBC_SIZES
        totals = [totals[0] + images, totals[1] + negative]
    assert totals == [1440, 916]
    # data.yaml names class 2 "Platelets"; the LabelImg classes.txt files are neither a source
    # of names nor label files without an image.
    assert MetadataCatalog.get(name).thing_classes == ["Platelets"]
    assert caplog.text == "", "no label file without an image, no skipped file, no bad box"


def test_txl_pbc_every_class(txl_pbc_root):
    dicts = load_yolo_with_negatives(txl_pbc_root, "test")
    assert composition(dicts) == (144, 144, 0), "no image has an empty label file"


def test_list_file_split_reads_the_images_it_names_in_its_order(tree, caplog):
    """An ultralytics list file: a path a line, relative to the list file's folder ("./" as
    ultralytics writes them) or absolute; labels found by replacing images/ with labels/."""
    (tree / "lists").mkdir()
    (tree / "lists" / "pick.txt").write_text(
        f"../images/train/d.bmp\n\n{tree / 'images' / 'train' / 'a.png'}\n./../images/train/c.png\n"
    )
    with caplog.at_level(logging.WARNING, logger=YOLO_LOGGER):
        dicts = load_yolo_with_negatives(tree, "lists/pick.txt", id_offset=7)
    assert [Path(d["file_name"]).name for d in dicts] == ["d.bmp", "a.png", "c.png"]
    assert [d["image_id"] for d in dicts] == [7, 8, 9]
    assert [len(d["annotations"]) for d in dicts] == [1, 2, 0]
    assert caplog.text == "", "the labels of images a list leaves out are expected"


def test_list_file_lines_that_name_no_usable_image_are_all_listed(tree):
    (tree / "images" / "elsewhere").mkdir()
    Image.new("RGB", (4, 4)).save(tree / "flat.png")
    (tree / "bad.txt").write_text("images/train/missing.png\nimages/train/notes.gif\nflat.png\n")
    with pytest.raises(ValueError) as error:
        load_yolo_with_negatives(tree, "bad.txt")
    message = str(error.value)
    assert str(tree / "bad.txt") in message and "3 lines" in message
    assert "line 1 'images/train/missing.png': no such file" in message
    assert "line 2 'images/train/notes.gif': not a" in message
    assert "line 3 'flat.png': no 'images' folder" in message


def test_missing_list_file_says_what_split_can_be(tree):
    with pytest.raises(FileNotFoundError, match=r"pick\.txt does not exist.*folder name"):
        register_yolo_with_negatives("yolo_missing_list", tree, "pick.txt")
