"""Online image-level mining: the sampler over a growing subset, and one training run that
mines its pool every K iterations, writes its steps, and resumes with the mined images."""

import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from hnm_d2 import mine
from hnm_d2.config import HNMConfigError
from hnm_d2.data.active_sampler import ActiveSubsetTrainingSampler

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


def test_activated_images_are_drawn_from_the_next_index_on():
    sampler = ActiveSubsetTrainingSampler(100, range(50), seed=0)
    stream = iter(sampler)
    before = [next(stream) for _ in range(10)]
    sampler.activate([60, 61])
    after = [next(stream) for _ in range(52)]  # one full pass over the 52 active images
    assert max(before) < 50
    assert sorted(after) == list(range(50)) + [60, 61]
    assert sampler.num_active == 52


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
    mine.main(mine_argv(synthetic_root, out, *flags))
    report = read(out / "mining" / "report.json")
    assert [s["step"] for s in report["steps"]] == [1, 2]
    assert read(out / "mining" / "step_1.json")["images"] == first  # not mined again
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
    ],
)
def test_settings_online_mining_would_ignore_are_refused(flags, named, synthetic_root, tmp_path):
    with pytest.raises(HNMConfigError, match=named):
        mine.main(mine_argv(synthetic_root, tmp_path, *flags))
    assert not (tmp_path / "mining" / "online").exists()
