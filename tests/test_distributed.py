"""Two CPU processes (gloo): training with every mechanism on checkpoints, resumes on both ranks
and evaluates; the mining scorer gives each pool image the same score with one process and two.
"""

import json
import re
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils import comm
from helpers import needs_cpu_launch, run_python

import hnm_d2
from hnm_d2.data import register_synthetic_splits
from hnm_d2.engine.checkpoint import AtomicDetectionCheckpointer
from hnm_d2.engine.launcher import leave_process_group
from hnm_d2.engine.pool_scoring import score_pool, select_hardest
from hnm_d2.modeling.buffer import table_to_entries

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "quick_schedules" / "hnm_instant_test.yaml"
QUICK_ALL = REPO / "configs" / "quick_schedules" / "hnm_all_mechanisms_instant_test.yaml"
RUN_TIMEOUT = 400  # a bound on each launched run; the machine may be busy
BUFFER_KEY = "roi_heads.hard_negative_buffer._extra_state"
PEER_KEY = "roi_heads.hard_negative_buffer.peer_tables"
NEGATIVE_TEST_IMAGES = 16  # synthetic_test: 16 positive and 16 negative images
POOL_SIZE = 48  # synthetic_pool


def run(*args):
    return run_python(args, RUN_TIMEOUT)


def run_train_net(*args):
    return run("train_net.py", *args)


def started_from(log_file):
    """The iterations each "Starting training from iteration N" line of a log names."""
    text = Path(log_file).read_text()
    return [int(n) for n in re.findall(r"Starting training from iteration (\d+)", text)]


def buffer_keys(table):
    return set(table_to_entries(table).keys.tolist())


def table_rows(table, seen_before=None):
    """The valid rows of a buffer table as tuples; only those last confirmed hard before
    iteration ``seen_before`` if given (column 8 is last_seen)."""
    valid = table[:, 0] > 0
    if seen_before is not None:
        valid &= table[:, 8] < seen_before
    return {tuple(row.tolist()) for row in table[valid]}


@needs_cpu_launch
def test_two_processes_train_checkpoint_resume_and_evaluate(tmp_path, synthetic_root):
    out = tmp_path / "out"
    args = ["--config-file", QUICK_ALL, "--synthetic", synthetic_root, "--num-gpus", 2]
    # MAX_ITER 4, CHECKPOINT_PERIOD 2: checkpoints after iterations 1 and 3, then evaluation.
    run_train_net(*args, "OUTPUT_DIR", out)
    assert (out / "model_0000001.pth").is_file()
    first = torch.load(out / "model_final.pth", map_location="cpu")
    assert first["iteration"] == 3
    # Each rank's buffer is in the checkpoint: rank 0's own table and both ranks' rows.
    peers = first["model"][PEER_KEY]
    assert peers.shape[0] == 2
    assert torch.equal(peers[0], first["model"][BUFFER_KEY])
    first_keys = [buffer_keys(peers[rank]) for rank in range(2)]
    # The ranks trained on disjoint images (4 draws each from 72), so their buffers are disjoint.
    assert all(first_keys) and not first_keys[0] & first_keys[1]
    results = json.loads((out / "results.json").read_text())
    # The evaluation gathered both ranks' halves of the test set.
    assert results["negatives"]["num_images"] == NEGATIVE_TEST_IMAGES
    assert "AP" in results["bbox_positives"]
    (out / "results.json").unlink()

    run_train_net(*args, "--resume", "OUTPUT_DIR", out, "SOLVER.MAX_ITER", 6)
    # Both ranks continued after the checkpoint of iteration 3 (rank 1 logs to log.txt.rank1;
    # both files hold the lines of both runs).
    assert started_from(out / "log.txt") == [0, 4]
    assert started_from(out / "log.txt.rank1") == [0, 4]
    final = torch.load(out / "model_final.pth", map_location="cpu")
    assert final["iteration"] == 5
    for rank in range(2):
        # Each rank restored its own row, not the other's nor the union: the entries it holds
        # that were last confirmed before the restart (iteration 4) are entries of its own row
        # in the first run's checkpoint, bit for bit. Nothing expires (MAX_AGE 1000) or is
        # evicted (CAPACITY 4096) in 2 more iterations, so some are left: those of the images
        # the rank does not see again in iterations 4 and 5.
        carried_over = table_rows(final["model"][PEER_KEY][rank], seen_before=4)
        assert carried_over, rank
        assert carried_over <= table_rows(peers[rank]), rank
    results = json.loads((out / "results.json").read_text())
    assert results["negatives"]["num_images"] == NEGATIVE_TEST_IMAGES


# ------------------------------------------------------------------ scoring the mining pool


def scoring_config(batch_size):
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(str(QUICK))
    # The untrained model's detections score near 0.5: a threshold of 0 keeps all of them.
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.HNM.MINING.SCORE_BATCH_SIZE = batch_size
    cfg.freeze()
    return cfg


def score(weights, synthetic_root, batch_size):
    register_synthetic_splits(synthetic_root)
    cfg = scoring_config(batch_size)
    model = build_model(cfg)
    AtomicDetectionCheckpointer(model).load(weights, checkpointables=[])
    return score_pool(model, DatasetCatalog.get("synthetic_pool"), cfg)


def score_worker(weights, synthetic_root, batch_size, result_file):
    """One rank of the two-process scoring: every rank scores its shard, rank 0 saves all."""
    records = score(weights, synthetic_root, batch_size)
    if comm.is_main_process():
        torch.save(records, result_file)
    else:
        assert records == []
    leave_process_group()


# Two ranks of score_worker through detectron2's launch, in a process of their own so that the
# run is bounded by a timeout. The spawned workers import score_worker from this module.
LAUNCH_SCORE_WORKERS = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from detectron2.engine import launch
from test_distributed import score_worker
weights, root, batch_size, result_file = sys.argv[1:]
launch(score_worker, 2, dist_url="auto", args=(weights, root, int(batch_size), result_file))
"""


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """Weights of a seeded untrained model: BatchNorm statistics and all, as a checkpoint."""
    torch.manual_seed(0)
    model = build_model(scoring_config(1))
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


@pytest.fixture
def one_thread():
    """The launched workers run with OMP_NUM_THREADS=1; this process scores with one intra-op
    thread too, since the thread count can change the order of float sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@needs_cpu_launch
@pytest.mark.parametrize("batch_size", [4, 5])
def test_two_processes_score_the_pool_as_one_does(
    random_weights, synthetic_root, tmp_path, batch_size, one_thread
):
    """Batch size 4 splits the 48 images into the same batches with 1 and 2 processes (24 per
    rank); batch size 5 does not (the single process's batch 20-24 is split between batches of
    both ranks). The images are all 128 x 128, so batching adds no padding either way."""
    single = score(random_weights, str(synthetic_root), batch_size)
    result_file = tmp_path / "two.pt"
    run("-c", LAUNCH_SCORE_WORKERS, random_weights, synthetic_root, batch_size, result_file)
    two = torch.load(result_file)

    assert len(single) == len(two) == POOL_SIZE
    assert [r["file_name"] for r in two] == [r["file_name"] for r in single]  # pool order
    assert all(r["score"] is not None for r in single)
    assert two == single  # every score, box and class, exactly
    assert select_hardest(two, 5) == select_hardest(single, 5)
