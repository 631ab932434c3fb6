"""Shared fixtures: the real BCCD data, the synthetic splits, a mining run, throwaway dataset
names, images."""

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from helpers import quick_mine_argv
from PIL import Image

from hnm_d2 import mine
from hnm_d2.data import register_synthetic_splits
from hnm_d2.modeling import HNMRPN


@pytest.fixture(scope="session")
def bccd_root():
    """BCCD in Pascal VOC layout: $HNM_BCCD_ROOT, else shared/data/bccd beside the repo."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"
    root = Path(os.environ.get("HNM_BCCD_ROOT", default))
    if not (root / "ImageSets" / "Main" / "trainval.txt").exists():
        pytest.skip(f"BCCD not found at {root}: set HNM_BCCD_ROOT to a copy of it.")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Folder holding the default synthetic splits, generated once per test session."""
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture
def synthetic_datasets(synthetic_root):
    """split -> registered name ("synthetic_train", "synthetic_test", "synthetic_pool").

    Registered at every use (cheap: the files are generated once per session), so a test that
    unregistered them does not break the next one."""
    return register_synthetic_splits(str(synthetic_root))


@pytest.fixture(scope="session")
def one_mined_round(synthetic_root, tmp_path_factory):
    """OUTPUT_DIR of a finished mining run: round 0, then round 1 adding 3 pool images.

    Shared by the tests of the session: use :func:`mined_run` for a copy to run on."""
    out = tmp_path_factory.mktemp("one_mined_round")
    mine.main(quick_mine_argv(synthetic_root, out, "--rounds", 1, "--per-round", 3))
    return out


@pytest.fixture
def mined_run(one_mined_round, tmp_path):
    """A copy of :func:`one_mined_round`'s OUTPUT_DIR, for a test to resume or change."""
    return Path(shutil.copytree(one_mined_round, tmp_path / "run"))


@pytest.fixture
def dataset_name():
    """A fresh dataset name per call; every name handed out is unregistered afterwards."""
    names = []

    def new_name(prefix="hnm_test"):
        names.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield new_name
    for name in names:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


@pytest.fixture
def write_image(tmp_path):
    """Write a random RGB image (fixed seed) of the given size; returns its path."""

    def write(name="image.png", width=64, height=48, seed=0):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3))
        path = tmp_path / name
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        return path

    return write


@pytest.fixture
def tiny_rpn():
    """Factory of HNMRPNs for calling losses()/_subsample_labels() on hand-built anchors: the
    head and the anchor generator are never used there. 8 anchors sampled per image."""

    def build(**kwargs):
        return HNMRPN(
            in_features=["p2"],
            head=None,
            anchor_generator=None,
            anchor_matcher=Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True),
            box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
            batch_size_per_image=8,
            positive_fraction=0.5,
            pre_nms_topk=(10, 10),
            post_nms_topk=(10, 10),
            **kwargs,
        )

    return build
