"""benchmarks/presets.py: the TXL-PBC splits that settings are chosen on and reported on."""

from collections import Counter
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog
from helpers import load_script

from hnm_d2.data import is_negative_image, register_yolo_with_negatives

presets = load_script("benchmarks/presets.py")
TXL_PBC = presets.DEFAULT_ROOTS["txl_pbc"]
pytestmark = pytest.mark.skipif(
    not TXL_PBC.is_dir(), reason=f"TXL-PBC is not at {TXL_PBC} (shared benchmark data)"
)


def read_list(path):
    return path.read_text().split()


def test_val_split_is_a_fixed_fifth_of_train_in_every_source(tmp_path):
    train, val = map(read_list, presets.txl_pbc_lists(TXL_PBC, "val", tmp_path / "a"))
    again = read_list(presets.txl_pbc_lists(TXL_PBC, "val", tmp_path / "b")[1])
    official_train = presets._images(TXL_PBC, "train")
    assert val == again  # the same images in every sitting
    assert not set(train) & set(val) and sorted(train + val) == official_train
    by_source = Counter(presets.source_of(image) for image in official_train)
    val_by_source = Counter(presets.source_of(image) for image in val)
    for source, count in by_source.items():
        assert abs(val_by_source[source] - 0.2 * count) <= 2, source


def test_test_split_is_the_official_val_and_test_and_trains_on_all_of_train(tmp_path):
    train, test = map(read_list, presets.txl_pbc_lists(TXL_PBC, "test", tmp_path))
    assert len(train) == 1008 and len(test) == 288 + 144  # TXL-PBC's README
    negatives = [image for image in test if not presets._has_platelet(TXL_PBC, image)]
    assert len(negatives) == 180 + 92
    assert {Path(image).parent.name for image in test} == {"val", "test"}


def test_sources_are_named_by_image_size():
    assert presets.source_of_size(640, 480) == "BCCD"
    assert presets.source_of_size(575, 575) == "Raabin-WBC"
    assert presets.source_of_size(366, 369) == presets.source_of_size(360, 363) == "PBC"
    assert presets.source_of_size(None, None) == "other"


def test_list_files_register_as_yolo_splits(tmp_path):
    """The lists the benchmark writes are what --register-yolo reads: the val share's 201 images
    hold 72 with a platelet, the other 807 the rest of train's 364."""
    lists = presets.txl_pbc_lists(TXL_PBC, "val", tmp_path)
    counts = []
    for name, list_file in zip(("presets_txl_train", "presets_txl_val"), lists):
        register_yolo_with_negatives(name, TXL_PBC, str(list_file), ["Platelets"])
        dicts = DatasetCatalog.get(name)
        counts.append((len(dicts), sum(not is_negative_image(d) for d in dicts)))
        DatasetCatalog.remove(name)
    assert counts == [(807, 364 - 72), (201, 72)]
