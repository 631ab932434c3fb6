"""Negative images flow through the whole model: batches with no object at all, and batches half
negative, train for a few iterations with finite losses, with the mechanisms off and on."""

import math
from pathlib import Path

import pytest
from detectron2.config import get_cfg

import hnm_d2
from hnm_d2.engine import HNMTrainer

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs/quick_schedules/hnm_instant_test.yaml"
QUICK_ALL = REPO / "configs/quick_schedules/hnm_all_mechanisms_instant_test.yaml"


def train_a_few_iterations(config, negative_fraction, output_dir, iterations=3):
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(
        [
            "HNM.DATA.NEGATIVE_FRACTION", negative_fraction,
            "SOLVER.MAX_ITER", iterations,
            "DATASETS.TEST", (),  # no final evaluation: this test is about training
            "OUTPUT_DIR", str(output_dir),
        ]
    )  # fmt: skip
    trainer = HNMTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer.storage


LOSSES = ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc")


@pytest.mark.parametrize("config", [QUICK, QUICK_ALL], ids=["mechanisms off", "all on"])
def test_all_negative_batches_train_on_background_only(config, synthetic_datasets, tmp_path):
    storage = train_a_few_iterations(config, 1.0, tmp_path)
    for key in LOSSES:
        values = [v for v, _ in storage.history(key).values()]
        assert len(values) == 3 and all(math.isfinite(v) for v in values), (key, values)
    # No object anywhere: no foreground RoI or anchor, no box regression to learn ...
    assert all(v == 0 for v, _ in storage.history("loss_box_reg").values())
    assert all(v == 0 for v, _ in storage.history("loss_rpn_loc").values())
    assert all(v == 0 for v, _ in storage.history("rpn/num_pos_anchors").values())
    # ... but the classifiers still learn "background" from every image.
    assert all(v > 0 for v, _ in storage.history("loss_cls").values())
    assert all(v > 0 for v, _ in storage.history("loss_rpn_cls").values())


@pytest.mark.parametrize("config", [QUICK, QUICK_ALL], ids=["mechanisms off", "all on"])
def test_half_negative_batches_train_with_finite_losses(config, synthetic_datasets, tmp_path):
    storage = train_a_few_iterations(config, 0.5, tmp_path, iterations=4)
    for key in LOSSES:
        values = [v for v, _ in storage.history(key).values()]
        assert len(values) == 4 and all(math.isfinite(v) for v in values), (key, values)
    assert any(v > 0 for v, _ in storage.history("rpn/num_pos_anchors").values())
