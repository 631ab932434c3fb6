"""HNM.MINING.SELECTION: mining's choice ("hardest") against its control, the same number of pool
images drawn at random from the same candidates ("random"), seeded from SEED and the round.

The draw itself is checked on records with known scores; one mining round on the quick schedule
checks that a run adds what the draw picks from the scored pool, records the setting, and
refuses a resume that switches it.
"""

import json
from collections import Counter
from pathlib import Path

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from helpers import QUICK, quick_mine_argv

import hnm_d2
from hnm_d2 import mine
from hnm_d2.config import HNMConfigError, validate_hnm_config
from hnm_d2.engine.checkpoint import AtomicDetectionCheckpointer
from hnm_d2.engine.mining_state import MiningStateError
from hnm_d2.engine.pool_scoring import draw_seed, score_pool, select_at_random, select_hardest


def scored(file_name, score):
    return {"file_name": file_name, "image_id": file_name, "score": score, "detections": {}}


def names(records):
    return [r["file_name"] for r in records]


# 20 pool images, image_k scored k / 20: the hardest five are known.
POOL = [scored(f"image_{k:02d}", k / 20) for k in range(20)]
HARDEST_FIVE = [f"image_{k:02d}" for k in (19, 18, 17, 16, 15)]


def test_random_draws_the_wanted_number_reproducibly_and_not_the_hardest():
    assert names(select_hardest(POOL, 5)) == HARDEST_FIVE
    drawn = select_at_random(POOL, 5, [0, 1])
    assert len(drawn) == len({r["file_name"] for r in drawn}) == 5
    assert names(drawn) != HARDEST_FIVE
    assert names(select_at_random(POOL, 5, [0, 1])) == names(drawn)  # the same seed: the same
    assert names(select_at_random(POOL[::-1], 5, [0, 1])) == names(drawn)  # whatever the order
    assert names(select_at_random(POOL, 5, [0, 2])) != names(drawn)  # the next round: anew
    # Ordered as a mined round is, hardest first.
    scores = [r["score"] for r in drawn]
    assert scores == sorted(scores, reverse=True)


def test_random_draws_from_the_candidates_mining_ranks_and_as_many():
    records = [scored("a", None), scored("b", 0.1), scored("c", None), scored("d", 0.9)]
    # Images without a detection are no candidates for either: both add the same number.
    for seed in range(20):
        assert sorted(names(select_at_random(records, 1, [seed, 1]))) in (["b"], ["d"])
        assert sorted(names(select_at_random(records, 5, [seed, 1]))) == ["b", "d"]
    assert select_at_random([scored("a", None)], 3, [0, 1]) == []


def test_random_draws_are_uniform_over_the_candidates():
    pool = POOL[:10]
    counts = Counter(
        name for seed in range(3000) for name in names(select_at_random(pool, 3, [seed, 1]))
    )
    assert set(counts) == set(names(pool))
    # Each image in 3 of 10 draws: 900 of 3000 expected, sd about 25.
    assert all(abs(count - 900) < 125 for count in counts.values()), counts


def test_the_draw_seed_is_seed_and_step_or_fresh_without_a_seed():
    cfg = get_cfg()
    cfg.SEED = 7
    assert draw_seed(cfg, 2) == [7, 2]
    cfg.SEED = -1  # detectron2's "a new seed every run"
    first, second = draw_seed(cfg, 2), draw_seed(cfg, 2)
    assert first[1] == second[1] == 2 and first[0] != second[0] and first[0] >= 0


def test_an_unknown_selection_fails_naming_the_key_and_the_values():
    cfg = hnm_d2.add_hnm_config(get_cfg())
    cfg.HNM.MINING.SELECTION = "easiest"
    with pytest.raises(
        HNMConfigError, match=r"HNM\.MINING\.SELECTION = 'easiest'.*'hardest' or 'random'"
    ):
        validate_hnm_config(cfg)
    with pytest.raises(SystemExit):  # the command line refuses it before anything is built
        mine.mining_argument_parser().parse_args(["--selection", "easiest"])


# ------------------------------------------------------------------- one round, in-process


def read(path):
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def random_round(synthetic_root, tmp_path_factory):
    """One round adding 3 pool images drawn at random (quick schedule, SEED 0)."""
    out = tmp_path_factory.mktemp("random_round")
    flags = ["--rounds", 1, "--per-round", 3, "--selection", "random"]
    mine.main(quick_mine_argv(synthetic_root, out, *flags))
    return out


def test_a_random_round_adds_the_seeded_draw_from_the_scored_pool(random_round):
    mining = random_round / "mining"
    selection = read(mining / "round_1_selection.json")
    assert (selection["selection"], selection["draw_seed"]) == ("random", [0, 1])
    cfg = hnm_d2.add_hnm_config(get_cfg())
    cfg.merge_from_file(QUICK)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = build_model(cfg)
    AtomicDetectionCheckpointer(model).load(selection["scored_with"], checkpointables=[])
    records = score_pool(model, DatasetCatalog.get("synthetic_pool"), cfg)
    assert names(selection["images"]) == names(select_at_random(records, 3, [0, 1]))
    assert names(selection["images"]) != names(select_hardest(records, 3))
    added = read(mining / "round_1.json")["added"]
    assert [a["file_name"] for a in added] == names(selection["images"])
    assert read(mining / "settings.json")["HNM.MINING.SELECTION"] == "random"
    assert read(mining / "report.json")["selection"] == "random"


def test_a_resume_that_switches_the_selection_is_refused(random_round, synthetic_root):
    flags = ["--rounds", 1, "--per-round", 3, "--selection", "hardest"]
    with pytest.raises(MiningStateError, match="HNM.MINING.SELECTION = 'random'"):
        mine.main(quick_mine_argv(synthetic_root, random_round, *flags))
