"""Determinism: the same seed and config train to the same losses, bit for bit, with every
mechanism on (ROI and RPN OHEM, the hard-negative buffer, background weights, the negative-share
sampler).

Two HNMTrainers are built and trained in this process, each after ``seed_all_rng(cfg.SEED)`` as
detectron2's ``default_setup`` does. The run is long enough for the buffer to re-inject boxes
(an image is first seen again at iteration 21 on the synthetic data), so that path is compared
too, not only the first visits.
"""

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.utils.env import seed_all_rng

import hnm_d2
from hnm_d2.data import register_synthetic_splits
from hnm_d2.engine import HNMTrainer

REPO = Path(__file__).resolve().parents[1]
QUICK_ALL = REPO / "configs" / "quick_schedules" / "hnm_all_mechanisms_instant_test.yaml"
ITERATIONS = 24
# Timings and the ETA differ from run to run by nature; everything else must not.
TIMING_KEYS = {"time", "data_time", "rank_data_time", "eta_seconds"}


@pytest.fixture
def one_thread():
    """Results depend on the number of intra-op threads (the order of float sums), and with more
    threads than free cores CPU training crawls: both runs get exactly one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(output_dir):
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(str(QUICK_ALL))
    cfg.merge_from_list(
        [
            "OUTPUT_DIR",
            str(output_dir),
            "SOLVER.MAX_ITER",
            str(ITERATIONS),
            "SOLVER.CHECKPOINT_PERIOD",
            "100000",  # only model_final
            "DATASETS.TEST",
            "()",  # no evaluation: training is what is compared
        ]
    )
    cfg.freeze()
    assert cfg.SEED >= 0  # the config fixes the seed
    seed_all_rng(cfg.SEED)
    trainer = HNMTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    histories = {
        key: [value for value, _ in history.values()]
        for key, history in trainer.storage.histories().items()
        if key not in TIMING_KEYS
    }
    return histories, trainer.model


def test_same_seed_and_config_give_the_same_losses(tmp_path, synthetic_root, one_thread):
    register_synthetic_splits(str(synthetic_root))
    first, first_model = train(tmp_path / "first")
    second, second_model = train(tmp_path / "second")

    loss_keys = {"total_loss", "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert loss_keys <= set(first)
    assert set(first) == set(second)
    for key in loss_keys:
        assert len(first[key]) == ITERATIONS, key  # one value per iteration
    for key in sorted(first):
        assert first[key] == second[key], key  # exact: the same floats

    # Every mechanism took part, so the comparison covers it.
    assert max(first["hnm/buffer_size"]) > 0
    assert max(first["hnm/buffer_injected"]) > 0
    assert max(first["hnm/ohem_kept_neg"]) > 0
    assert "hnm/rpn_ohem_neg" in first
    # Losses move (the model trains), so equal lists are not equal constants.
    assert len(set(first["loss_cls"])) > 1

    second_state = second_model.state_dict()
    for name, value in first_model.state_dict().items():
        assert torch.equal(value, second_state[name]), name
