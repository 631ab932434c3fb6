"""Kill and resume with real processes: a training run and a mining run are SIGKILLed in the
middle, started again, and carry on from what they had saved.

Each run is a separate ``train_net.py`` / ``python -m hnm_d2.mine`` process in its own process
group; the test polls the files the run writes (metrics.json, last_checkpoint, the mining state
files) to choose the moment of the kill, and kills the whole group. One state is too brief to
hit with a timed kill (between the last two checkpoint saves of a run); the last test makes it
by hand, as such a kill leaves it.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer

import hnm_d2
from hnm_d2.data import register_synthetic_splits
from hnm_d2.engine import HNMTrainer

REPO = Path(__file__).resolve().parents[1]
QUICK = "configs/quick_schedules/hnm_instant_test.yaml"
QUICK_ALL = "configs/quick_schedules/hnm_all_mechanisms_instant_test.yaml"
# Bounds of every wait on a process: generous, the machine may be busy with other work.
RUN_TIMEOUT = 300
POLL_INTERVAL = 0.02
POOL_SIZE = 48  # synthetic_pool
# DefaultTrainer checkpoints the optimizer through a state_dict of its own, which came after
# detectron2 0.6: on 0.6 a resume restarts SGD's momentum, as stock 0.6 does.
CHECKPOINTS_THE_OPTIMIZER = "state_dict" in vars(DefaultTrainer)

# The training run: checkpoints after iterations 14, 29 and 39 (model_final). detectron2's
# PeriodicWriter writes metrics.json every 20 iterations, so when iteration 19 appears there the
# last checkpoint is iteration 14 and the run is between two checkpoints, 10 iterations away
# from the next one: a margin that a 20 ms poll cannot miss.
MAX_ITER = 40
CHECKPOINT_PERIOD = 15
KILL_AFTER_LOGGED_ITER = 19
CHECKPOINT_ITER = 14


def start(args, log_file):
    """Start ``python *args`` in the repo, in a new process group, output to ``log_file``."""
    with open(log_file, "w") as log:
        return subprocess.Popen(
            [sys.executable, *map(str, args)],
            cwd=REPO,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the kill reaches any child it starts
        )


def kill(proc):
    """SIGKILL the process group of ``proc`` (started by :func:`start`) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def poll(condition, proc, what, log_file, timeout=RUN_TIMEOUT):
    """Wait until ``condition()`` is truthy and return it; fail if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(
                f"the process ended (rc {proc.returncode}) before {what}:\n"
                + Path(log_file).read_text()[-5000:]
            )
        if time.monotonic() > deadline:
            kill(proc)
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(POLL_INTERVAL)


def run_to_completion(args, log_file):
    proc = start(args, log_file)
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise
    log = Path(log_file).read_text()
    assert rc == 0, f"{args} failed (rc {rc}):\n{log[-6000:]}"
    return log


def logged_iterations(output_dir):
    """The iterations metrics.json holds training losses for (a line being written is skipped)."""
    path = Path(output_dir) / "metrics.json"
    if not path.exists():
        return []
    iterations = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "total_loss" in record:
            iterations.append(record["iteration"])
    return iterations


def last_checkpoint(output_dir):
    path = Path(output_dir) / "last_checkpoint"
    return path.read_text().strip() if path.exists() else None


def saved_iteration(checkpoint):
    return torch.load(checkpoint, map_location="cpu")["iteration"]


def started_from(log):
    """The iterations "Starting training from iteration N" names, in order."""
    return [int(n) for n in re.findall(r"Starting training from iteration (\d+)", log)]


# ------------------------------------------------------------------------------- training


def train_opts(output_dir):
    return [
        "OUTPUT_DIR",
        output_dir,
        "SOLVER.MAX_ITER",
        MAX_ITER,
        "SOLVER.CHECKPOINT_PERIOD",
        CHECKPOINT_PERIOD,
        "DATASETS.TEST",
        "()",  # the evaluation is not what this test is about; it only costs time
    ]


def resumed_trainer(output_dir, synthetic_root):
    """An HNMTrainer built in this process for ``output_dir``, after resume_or_load(True)."""
    register_synthetic_splits(str(synthetic_root))
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(str(REPO / QUICK_ALL))
    cfg.merge_from_list([str(v) for v in train_opts(output_dir)])
    cfg.freeze()
    trainer = HNMTrainer(cfg)
    trainer.resume_or_load(resume=True)
    return trainer


def assert_state_equal(actual, expected, what):
    """Nested dicts/lists of tensors and plain values are equal, tensors bit for bit."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(actual, expected), what
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), what
        for key in expected:
            assert_state_equal(actual[key], expected[key], f"{what}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), what
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_state_equal(a, e, f"{what}[{i}]")
    else:
        assert actual == expected, what


def test_training_killed_between_checkpoints_resumes_from_the_last_one(tmp_path, synthetic_root):
    out = tmp_path / "out"
    args = ["train_net.py", "--config-file", QUICK_ALL, "--synthetic", synthetic_root]
    log_file = tmp_path / "killed.log"
    proc = start([*args, *train_opts(out)], log_file)
    try:
        poll(
            lambda: KILL_AFTER_LOGGED_ITER in logged_iterations(out),
            proc,
            f"iteration {KILL_AFTER_LOGGED_ITER} in metrics.json",
            log_file,
        )
    finally:
        kill(proc)
    checkpoint_name = f"model_{CHECKPOINT_ITER:07d}.pth"
    # Killed between checkpoints: past the one of iteration 14, before the one of 29.
    assert last_checkpoint(out) == checkpoint_name, "the kill came 10 iterations late"
    assert sorted(p.name for p in out.glob("model_*.pth")) == [checkpoint_name]
    assert max(logged_iterations(out)) == KILL_AFTER_LOGGED_ITER

    # What a resume restores, compared in this process with the checkpoint file. On a copy:
    # building a trainer opens writers in its OUTPUT_DIR.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    checkpoint = torch.load(copy / checkpoint_name, map_location="cpu")
    trainer = resumed_trainer(copy, synthetic_root)
    assert checkpoint["iteration"] == trainer.iter == CHECKPOINT_ITER
    assert trainer.start_iter == CHECKPOINT_ITER + 1

    if CHECKPOINTS_THE_OPTIMIZER:
        expected_optimizer = checkpoint["trainer"]["_trainer"]["optimizer"]
        assert len(expected_optimizer["state"]) > 0  # SGD momentum buffers: state that matters
        assert_state_equal(trainer.optimizer.state_dict(), expected_optimizer, "optimizer")
    else:
        assert "_trainer" not in checkpoint["trainer"]

    expected_scheduler = checkpoint["trainer"]["hooks"]["LRScheduler"]
    assert expected_scheduler["last_epoch"] == CHECKPOINT_ITER + 1  # one step per iteration
    assert_state_equal(trainer.scheduler.state_dict(), expected_scheduler, "scheduler")

    buffer = trainer.model.roi_heads.hard_negative_buffer
    saved_table = checkpoint["model"]["roi_heads.hard_negative_buffer._extra_state"]
    assert int((saved_table[:, 0] > 0).sum()) > 0  # the buffer had filled (SCORE_THRESH 0)
    assert buffer.num_entries == int((saved_table[:, 0] > 0).sum())
    assert torch.equal(buffer.table(), saved_table)
    assert_state_equal(trainer.model.state_dict(), checkpoint["model"], "model")
    del trainer

    log = run_to_completion([*args, "--resume", *train_opts(out)], tmp_path / "resumed.log")
    assert started_from(log) == [CHECKPOINT_ITER + 1]
    assert last_checkpoint(out) == "model_final.pth"
    assert saved_iteration(out / "model_final.pth") == MAX_ITER - 1
    assert max(logged_iterations(out)) == MAX_ITER - 1
    assert not list(out.glob(".tmp-*"))  # no temporary checkpoint file left behind


# --------------------------------------------------------------------------------- mining

PER_ROUND = 3
ITERS_PER_ROUND = 10  # with the quick schedule's CHECKPOINT_PERIOD 2: checkpoints at 1, 3, ...


def mining_args(synthetic_root, out):
    return [
        "-m",
        "hnm_d2.mine",
        "--config-file",
        QUICK,
        "--synthetic",
        synthetic_root,
        "--negative-pool",
        "synthetic_pool",
        "--rounds",
        2,
        "--per-round",
        PER_ROUND,
        "--iters-per-round",
        ITERS_PER_ROUND,
        "OUTPUT_DIR",
        out,
        # An untrained model's detections score low: with threshold 0 every pool image counts.
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        0.0,
    ]


def read_json(path):
    return json.loads(Path(path).read_text())


def snapshot(paths):
    """Content and modification time of each file: what changes if it is written again."""
    return {str(p): (Path(p).read_bytes(), Path(p).stat().st_mtime_ns) for p in paths}


def test_mining_killed_while_retraining_round_1_resumes_without_redoing_work(
    tmp_path, synthetic_root
):
    out = tmp_path / "out"
    mining = out / "mining"
    round_1_dir = mining / "round_1"
    args = mining_args(synthetic_root, out)
    log_file = tmp_path / "killed.log"
    proc = start(args, log_file)
    try:
        # Round 1 has its selection and is training: it wrote a checkpoint of its own.
        poll(lambda: last_checkpoint(round_1_dir), proc, "a checkpoint of round 1", log_file)
    finally:
        kill(proc)
    assert not (mining / "round_1.json").exists(), "killed too late: round 1 had finished"
    killed_at = last_checkpoint(round_1_dir)
    resume_iter = saved_iteration(round_1_dir / killed_at) + 1
    assert resume_iter < ITERS_PER_ROUND
    selection = read_json(mining / "round_1_selection.json")
    round_0_files = [
        mining / "round_0.json",
        mining / "round_0" / "model_final.pth",
        mining / "round_0" / "metrics.json",
        mining / "round_1_selection.json",
    ]
    before = snapshot(round_0_files)

    log = run_to_completion(args, tmp_path / "rerun.log")

    assert snapshot(round_0_files) == before  # round 0 not trained again, round 1 not rescored
    assert "Round 0 is done: read back from" in log
    assert "Round 1: reusing the selection" in log
    # Round 1 resumed from the checkpoint it was killed after; round 2 trained from the start.
    assert started_from(log) == [resume_iter, 0]
    report = read_json(mining / "report.json")
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert (report["rounds_done"], report["stop_reason"]) == (2, None)

    summaries = [read_json(mining / f"round_{k}.json") for k in range(3)]
    added = [[image["file_name"] for image in s["added"]] for s in summaries]
    assert added[0] == []
    assert added[1] == [image["file_name"] for image in selection["images"]]
    assert [len(a) for a in added[1:]] == [PER_ROUND, PER_ROUND]
    mined = added[1] + added[2]
    assert len(set(mined)) == len(mined)  # no image mined twice
    assert [(s["pool_size_before"], s["pool_size_after"]) for s in summaries] == [
        (POOL_SIZE, POOL_SIZE),
        (POOL_SIZE, POOL_SIZE - PER_ROUND),
        (POOL_SIZE - PER_ROUND, POOL_SIZE - 2 * PER_ROUND),
    ]
    assert [r["pool_size_after"] for r in report["rounds"]] == [
        POOL_SIZE,
        POOL_SIZE - PER_ROUND,
        POOL_SIZE - 2 * PER_ROUND,
    ]
    # Round 2 chose among the images round 1 left: its selection says how many it scored.
    assert read_json(mining / "round_2_selection.json")["images_scored"] == POOL_SIZE - PER_ROUND
    for k in (1, 2):
        assert saved_iteration(mining / f"round_{k}" / "model_final.pth") == ITERS_PER_ROUND - 1


def test_mining_round_killed_between_its_last_two_saves_still_gets_its_final_weights(
    tmp_path, synthetic_root
):
    """On a round's last iteration the checkpointer saves model_<N>.pth, then model_final.pth
    (CHECKPOINT_PERIOD 2 divides the 2 iterations). A SIGKILL between the two (seen in a loop of
    random kills) leaves last_checkpoint naming model_0000001.pth and no model_final.pth. The
    rerun must still produce model_final.pth: the next round is scored with and warm-started
    from it. The window is too short to hit with a timed kill, so the test makes that state."""
    out = tmp_path / "out"
    mining = out / "mining"
    round_0 = mining / "round_0"
    args = mining_args(synthetic_root, out)
    args[args.index("--iters-per-round") + 1] = 2
    args[args.index("--rounds") + 1] = 0  # round 0 only; the rerun adds round 1
    run_to_completion(args, tmp_path / "round_0.log")
    last_iteration = round_0 / "model_0000001.pth"
    assert saved_iteration(last_iteration) == 1
    # The state of the kill: the round's last periodic checkpoint tagged, no final one, no summary.
    (round_0 / "model_final.pth").unlink()
    (round_0 / "last_checkpoint").write_text(last_iteration.name)
    (mining / "round_0.json").unlink()

    args[args.index("--rounds") + 1] = 1
    log = run_to_completion(args, tmp_path / "rerun.log")

    assert started_from(log) == [2, 0]  # round 0: nothing left to train; round 1 from scratch
    assert (round_0 / "model_final.pth").read_bytes() == last_iteration.read_bytes()
    assert last_checkpoint(round_0) == "model_final.pth"
    round_1 = read_json(mining / "round_1.json")
    assert round_1["initialized_from"] == str(round_0 / "model_final.pth")
    assert len(round_1["added"]) == PER_ROUND
    assert read_json(mining / "round_1_selection.json")["scored_with"] == str(
        round_0 / "model_final.pth"
    )
