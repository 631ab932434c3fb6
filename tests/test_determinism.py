"""Determinism: the same seed and config train to the same losses, bit for bit, with every
mechanism on (ROI and RPN OHEM, the hard-negative buffer, background weights, the negative-share
sampler).

Two HNMTrainers are built and trained in this process, each after ``seed_all_rng(cfg.SEED)`` as
detectron2's ``default_setup`` does. The run is long enough for the buffer to re-inject boxes
(an image is first seen again at iteration 21 on the synthetic data), so that path is compared
too, not only the first visits. A second test trains in two separate ``train_net.py``
processes with different PYTHONHASHSEED values: what depends on the process (str hashes and so
the order of sets of str, ids, time) would show there and not in one process.
"""

import json
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.utils.env import seed_all_rng
from helpers import run_python

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


def run_train_net(output_dir, synthetic_root, hash_seed, timeout=300):
    cmd = ["train_net.py", "--config-file", str(QUICK_ALL)]
    cmd += ["--synthetic", str(synthetic_root), "OUTPUT_DIR", str(output_dir)]
    cmd += ["SOLVER.MAX_ITER", str(ITERATIONS), "SOLVER.CHECKPOINT_PERIOD", "100000"]
    cmd += ["DATASETS.TEST", "()"]
    run_python(cmd, timeout, env={"PYTHONHASHSEED": hash_seed})


def logged_metrics(output_dir):
    """metrics.json without the timings."""
    lines = (Path(output_dir) / "metrics.json").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def assert_tensors_equal(actual, expected, what):
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), what
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), what
        for key in expected:
            assert_tensors_equal(actual[key], expected[key], f"{what}[{key!r}]")
    else:
        assert actual == expected, what


def test_separate_processes_with_other_hash_seeds_train_the_same_model(tmp_path, synthetic_root):
    runs = []
    for hash_seed in ("1", "2"):
        run_train_net(tmp_path / hash_seed, synthetic_root, hash_seed)
        checkpoint = torch.load(tmp_path / hash_seed / "model_final.pth", map_location="cpu")
        runs.append((checkpoint, logged_metrics(tmp_path / hash_seed)))
    (first, first_metrics), (second, second_metrics) = runs

    assert first["iteration"] == ITERATIONS - 1
    buffer = first["model"]["roi_heads.hard_negative_buffer._extra_state"]
    assert int((buffer[:, 0] > 0).sum()) > 0  # the buffer is part of what is compared
    # Weights, BatchNorm statistics, the buffer, the optimizer's momenta, the scheduler.
    assert_tensors_equal(second["model"], first["model"], "model")
    assert_tensors_equal(second["trainer"], first["trainer"], "trainer")
    assert len(first_metrics) == 2  # iterations 19 and 23 (detectron2 writes every 20)
    assert second_metrics == first_metrics
