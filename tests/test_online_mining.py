"""Online image-level mining: the sampler over a growing subset, and one training run that
mines its pool every K iterations, writes its steps, and resumes with the mined images."""

import itertools
import json
import re
from pathlib import Path

import pytest
import torch
from detectron2.data import MetadataCatalog

from hnm_d2 import mine
from hnm_d2.config import HNMConfigError
from hnm_d2.data.active_sampler import ActiveSubsetTrainingSampler
from hnm_d2.engine.mining_pool import open_checked_pool
from hnm_d2.engine.online_mining import OnlineLayout, OnlineMiningTrainer

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "quick_schedules" / "hnm_instant_test.yaml")
POOL_SIZE, TRAIN_SIZE = 48, 72  # synthetic_pool, synthetic_train


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_draws_only_active_images_in_shuffled_passes():
    sampler = ActiveSubsetTrainingSampler(10, range(4), seed=3)
    drawn = take(sampler, 40)
    assert set(drawn) == {0, 1, 2, 3}
    assert all(sorted(drawn[k : k + 4]) == [0, 1, 2, 3] for k in range(0, 40, 4))  # passes
    assert take(ActiveSubsetTrainingSampler(10, range(4), seed=3), 40) == drawn  # seeded


def test_activated_images_are_drawn_from_the_next_block_on():
    sampler = ActiveSubsetTrainingSampler(100, range(50), seed=0)  # blocks of 50
    stream = iter(sampler)
    first_block = [next(stream) for _ in range(10)]
    sampler.activate([60, 61])
    first_block += [next(stream) for _ in range(40)]
    assert sorted(first_block) == list(range(50))  # the block drawn before the activation
    later_blocks = [[next(stream) for _ in range(50)] for _ in range(10)]
    assert all(len(set(block)) == 50 and max(block) <= 61 for block in later_blocks)
    assert {60, 61} <= set(itertools.chain(*later_blocks)) and sampler.num_active == 52


def test_copies_that_see_an_activation_at_different_moments_realign_after_one_block():
    # Two DataLoader workers iterate their own copies of the stream (worker k takes the
    # indices at positions k, k + 2, ...); one notices the activation a block later.
    sampler = ActiveSubsetTrainingSampler(20, range(8), seed=0)  # blocks of 8
    early, late = iter(sampler), iter(sampler)
    drawn_early = [next(early) for _ in range(12)]  # blocks 0 and half of 1: old mask
    sampler.activate([15, 16])
    drawn_late = [next(late) for _ in range(40)]  # every block read with the new mask
    drawn_early += [next(early) for _ in range(28)]
    assert drawn_early[16:] == drawn_late[16:]  # from block 2 on, index for index


def mine_argv(root, out, *flags):
    return (
        ["--config-file", QUICK, "--synthetic", str(root), "--negative-pool", "synthetic_pool"]
        + ["--online", *map(str, flags)]
        + ["OUTPUT_DIR", str(out), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    )


def read(path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def online_run(synthetic_root, tmp_path_factory):
    """9 iterations, mining 3 images after iterations 3 and 6; a checkpoint after each."""
    out = tmp_path_factory.mktemp("online")
    flags = ["--rounds", 2, "--per-round", 3, "SOLVER.MAX_ITER", 9, "SOLVER.CHECKPOINT_PERIOD", 3]
    mine.main(mine_argv(synthetic_root, out, *flags))
    return out, flags


def test_steps_mine_the_pool_at_every_k_iterations(online_run):
    out, _ = online_run
    report = read(out / "mining" / "report.json")
    assert [(s["step"], s["iteration"], s["images_added"]) for s in report["steps"]] == [
        (1, 3, 3),
        (2, 6, 3),
    ]
    assert [s["pool_size_after"] for s in report["steps"]] == [POOL_SIZE - 3, POOL_SIZE - 6]
    step_1, step_2 = (read(out / "mining" / f"step_{k}.json") for k in (1, 2))
    mined = [i["file_name"] for i in step_1["images"] + step_2["images"]]
    assert len(set(mined)) == 6  # an image is mined once
    # Hardest first, and none of the images left at step 2 beat the ones step 2 took.
    scores = [i["score"] for i in step_2["images"]]
    assert scores == sorted(scores, reverse=True)
    assert report["results"]["negatives"]["num_images"] == 16
    for name in ("curves.png", "step_1_mined.png", "step_2_mined.png"):
        assert (out / "mining" / name).stat().st_size > 5000


def test_mining_steps_are_in_the_checkpoint_and_come_back_on_resume(online_run, synthetic_root):
    out, flags = online_run
    training = out / "mining" / "online"
    # Iteration 3's checkpoint, saved right after step 1 mined (the hook runs first).
    checkpoint = torch.load(training / "model_0000002.pth", map_location="cpu")
    hook_states = checkpoint["trainer"]["hooks"]
    (saved_steps,) = [v["steps"] for k, v in hook_states.items() if "OnlineMining" in k]
    assert [s["step"] for s in saved_steps] == [1]
    first = read(out / "mining" / "step_1.json")["images"]

    # As if killed before iteration 6: resume from that checkpoint; step 2 mines again.
    (training / "last_checkpoint").write_text("model_0000002.pth")
    (training / "model_final.pth").unlink()
    layout = OnlineLayout(str(out), MetadataCatalog.get("synthetic_train"))
    argv = mine_argv(synthetic_root, out, *flags)
    cfg = mine.mining_config(mine.mining_argument_parser().parse_args(argv)).clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = layout.training_dir  # as run_online_mining trains
    pool, _ = open_checked_pool(cfg)
    trainer = OnlineMiningTrainer(cfg, pool, layout)
    trainer.resume_or_load(resume=True)
    # Step 1's images are back in the training stream and out of the pool, before any step.
    assert trainer.mining_data.sampler.num_active == TRAIN_SIZE + 3
    assert len(pool) == POOL_SIZE - 3
    trainer.train()
    step_2 = read(out / "mining" / "step_2.json")["images"]
    assert read(out / "mining" / "step_1.json")["images"] == first  # not mined again
    assert not {i["file_name"] for i in first} & {i["file_name"] for i in step_2}
    assert trainer.mining_data.sampler.num_active == TRAIN_SIZE + 6
    assert (training / "model_final.pth").exists()


def test_resume_with_other_settings_fails_naming_the_setting(online_run, synthetic_root):
    out, flags = online_run
    with pytest.raises(Exception, match=re.escape("records mine_every = 3, but this run has 2")):
        mine.main(mine_argv(synthetic_root, out, *flags, "HNM.MINING.MINE_EVERY", 2))


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--iters-per-round", 3], "HNM.MINING.ITERS_PER_ROUND"),
        (["HNM.DATA.NEGATIVE_FRACTION", 0.5], "HNM.DATA.NEGATIVE_FRACTION"),
        (["--rounds", 3, "--mine-every", 3, "SOLVER.MAX_ITER", 9], "do not fit"),
        (["--rounds", 9, "SOLVER.MAX_ITER", 8], "too short"),
        (["DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler"], "SAMPLER_TRAIN"),
    ],
)
def test_settings_online_mining_would_ignore_are_refused(flags, named, synthetic_root, tmp_path):
    with pytest.raises(HNMConfigError, match=named):
        mine.main(mine_argv(synthetic_root, tmp_path, *flags))
    assert not (tmp_path / "mining" / "online").exists()
