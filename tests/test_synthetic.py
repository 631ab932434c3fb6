"""Synthetic generator: determinism, counts, negatives, box geometry, caching, registration."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hnm_d2.data import generate_synthetic_coco, register_synthetic_splits

SIZE = 64


def generate(root, seed=0, num_positive=6, num_negative=4):
    return Path(generate_synthetic_coco(root, num_positive, num_negative, SIZE, seed, "train"))


def folder_bytes(root):
    return {
        p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()
    }


def load(json_path):
    return json.loads(Path(json_path).read_text())


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    generate(tmp_path / "a", seed=0)
    generate(tmp_path / "b", seed=0)
    generate(tmp_path / "c", seed=1)
    a, b, c = (folder_bytes(tmp_path / name) for name in "abc")
    assert len(a) == 11, "10 PNG images and the JSON"
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a)


def test_counts_negatives_and_category(tmp_path):
    content = load(generate(tmp_path, num_positive=6, num_negative=4))
    images, annotations = content["images"], content["annotations"]
    assert len(images) == 10
    assert content["categories"] == [{"id": 1, "name": "target"}]
    targets_per_image = [sum(a["image_id"] == im["id"] for a in annotations) for im in images]
    assert all(1 <= n <= 4 for n in targets_per_image[:6])
    assert targets_per_image[6:] == [0, 0, 0, 0]
    assert len({im["id"] for im in images}) == 10
    assert {a["category_id"] for a in annotations} == {1}


def test_boxes_lie_inside_the_image_and_frame_a_dotted_disk(tmp_path):
    json_path = generate(tmp_path, num_positive=8, num_negative=0)
    content = load(json_path)
    file_of_id = {im["id"]: im["file_name"] for im in content["images"]}
    for annotation in content["annotations"]:
        x, y, w, h = annotation["bbox"]
        assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
        assert w == h and annotation["area"] == pytest.approx(w * h, abs=0.01)
        pixels = np.asarray(
            Image.open(json_path.parent / "train" / file_of_id[annotation["image_id"]])
        )
        cx, cy, r = x + w / 2, y + h / 2, w / 2
        centre = pixels[int(cy), int(cx)]
        body = pixels[int(cy), int(cx + 0.7 * r)]
        assert centre.max() <= 35, "the dark dot at the centre"
        assert body.min() >= 150, "the bright disk around it"


def test_existing_split_with_same_parameters_is_not_rewritten(tmp_path):
    json_path = generate(tmp_path)
    image = tmp_path / "train" / "train_00000.png"
    image.write_bytes(b"marker")
    assert generate(tmp_path) == json_path
    assert image.read_bytes() == b"marker"
    generate(tmp_path, seed=2)
    assert image.read_bytes() != b"marker"
    assert load(json_path)["info"]["hnm_d2_synthetic"]["seed"] == 2


def test_default_splits_are_registered_once(synthetic_datasets, synthetic_root, tmp_path):
    assert synthetic_datasets == {
        "train": "synthetic_train",
        "val": "synthetic_val",
        "test": "synthetic_test",
        "pool": "synthetic_pool",
    }
    assert register_synthetic_splits(str(synthetic_root)) == synthetic_datasets
    with pytest.raises(ValueError, match="synthetic_train is already registered"):
        register_synthetic_splits(str(tmp_path))


def test_splits_have_disjoint_image_ids(synthetic_root):
    ids = [
        {im["id"] for im in load(synthetic_root / f"{split}.json")["images"]}
        for split in ("train", "test", "pool")
    ]
    assert sum(map(len, ids)) == len(set.union(*ids)) == 72 + 32 + 48
