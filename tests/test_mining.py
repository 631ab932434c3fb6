"""The image-level mining loop (``python -m hnm_d2.mine``): ranking and selection, the files of
each round, resuming after an interruption, the plots, and a pool that runs dry.

The loop runs in-process on the quick schedule (a tiny model, 4 iterations per round) and the
synthetic data; MODEL.ROI_HEADS.SCORE_THRESH_TEST 0 makes the barely trained model's detections
on the pool images count.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from helpers import needs_cpu_launch
from PIL import Image

import hnm_d2
from hnm_d2 import mine
from hnm_d2.data import is_negative_image, register_negative_folder, register_subset
from hnm_d2.engine.checkpoint import AtomicDetectionCheckpointer
from hnm_d2.engine.mining import scaled_schedule
from hnm_d2.engine.mining_pool import CandidatePool, check_pool_outside_training_set
from hnm_d2.engine.mining_state import MiningStateError, check_settings, mining_settings, read_json
from hnm_d2.engine.pool_scoring import (
    image_record,
    images_per_round,
    rank_by_score,
    score_pool,
    select_hardest,
)
from hnm_d2.utils.atomic import write_json_atomically

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "quick_schedules" / "hnm_instant_test.yaml")
POOL_SIZE = 48  # synthetic_pool
TRAIN_SIZE = 72  # synthetic_train
THRESHOLDS = ["0.05", "0.3", "0.5", "0.7"]  # HNM.EVAL.SCORE_THRESHOLDS
# settings.json as versions that did not record the config keys wrote it for the one-round run.
SETTINGS_WITHOUT_CONFIG_KEYS = {
    "pool": ["synthetic_pool"],
    "train_datasets": ["synthetic_train"],
    "per_round": 3.0,
    "iterations_per_round": 4,
    "from_scratch": False,
}


def quick_cfg(*opts):
    """The quick schedule's config, with the hnm_d2 keys and ``opts`` (KEY, value, ...)."""
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(list(opts))
    return cfg


# ----------------------------------------------------------------- ranking and selection


def scored(file_name, score):
    return {"file_name": file_name, "image_id": file_name, "score": score, "detections": {}}


def names(records):
    return [r["file_name"] for r in records]


def test_ranking_is_by_highest_score_with_ties_ordered_by_file_name():
    records = [scored("c", 0.5), scored("d", 0.9), scored("b", None), scored("a", 0.9)]
    assert names(rank_by_score(records)) == ["a", "d", "c"]
    assert rank_by_score(records[::-1]) == rank_by_score(records)


def test_images_without_detections_are_never_chosen():
    records = [scored("a", None), scored("b", 0.01), scored("c", None)]
    assert names(select_hardest(records, 3)) == ["b"]
    assert select_hardest([scored("a", None)], 5) == []
    assert names(select_hardest([scored("a", 0.2), scored("b", 0.7)], 1)) == ["b"]


def test_image_record_keeps_the_highest_score_and_the_best_detections():
    scores = torch.tensor([0.1, 0.8, 0.3, 0.05, 0.6, 0.2, 0.7])
    boxes = torch.arange(7, dtype=torch.float32)[:, None] + torch.tensor([0.0, 0.0, 10.0, 10.0])
    instances = Instances(
        (50, 60), pred_boxes=Boxes(boxes), scores=scores, pred_classes=torch.arange(7)
    )
    record = image_record({"file_name": "x.png", "image_id": 7}, instances)
    assert record["score"] == pytest.approx(0.8)
    assert record["detections"]["scores"] == pytest.approx([0.8, 0.7, 0.6, 0.3, 0.2])
    assert record["detections"]["classes"] == [1, 6, 4, 2, 5]
    assert record["detections"]["boxes"][0] == [1.0, 1.0, 11.0, 11.0]

    empty = Instances(
        (50, 60),
        pred_boxes=Boxes(torch.zeros(0, 4)),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0),
    )
    assert image_record({"file_name": "y.png", "image_id": 8}, empty)["score"] is None


def test_per_round_is_a_count_or_a_fraction_of_the_training_set():
    assert images_per_round(3, 1000) == 3
    assert images_per_round(3.0, 2) == 3
    assert images_per_round(0.15, 72) == 11  # 10.8
    assert images_per_round(0.25, 10) == 3  # 2.5, rounded half up
    assert images_per_round(0.01, 10) == 1  # at least one
    with pytest.raises(ValueError, match="PER_ROUND"):
        images_per_round(2.5, 10)


def test_a_shorter_round_keeps_the_schedule_shape():
    assert scaled_schedule(600, (450, 550), 50, 150) == (150, (113, 138), 13)
    assert scaled_schedule(600, (450, 550), 50, 600) == (600, (450, 550), 50)
    # Steps landing on 0, on the end or on each other are dropped: the scheduler needs
    # strictly increasing steps inside the run.
    assert scaled_schedule(100, (2, 10, 11, 99), 0, 10) == (10, (1,), 0)


@pytest.fixture
def two_small_pools():
    pools = {
        "test_mining_pool_a": [
            {"file_name": "a1", "image_id": 1},
            {"file_name": "a2", "image_id": 2},
        ],
        "test_mining_pool_b": [
            {"file_name": "b1", "image_id": 3},
            {"file_name": "a1", "image_id": 1},
        ],
    }
    for name, records in pools.items():
        DatasetCatalog.register(name, lambda records=records: records)
    yield list(pools)
    for name in pools:
        DatasetCatalog.remove(name)


def test_pool_shrinks_by_what_is_taken_and_rejects_unknown_images(two_small_pools):
    pool = CandidatePool(two_small_pools)
    assert (pool.total, len(pool)) == (3, 3)  # a1 is listed twice, a candidate once
    assert [r["file_name"] for r in pool.take(["a2"], "sel.json")] == ["a2"]
    assert names(pool.remaining()) == ["a1", "b1"] and len(pool) == 2
    with pytest.raises(MiningStateError, match="sel.json"):
        pool.take(["a2"], "sel.json")  # taken already
    with pytest.raises(MiningStateError, match="test_mining_pool_a"):
        pool.take(["zz"], "sel.json")
    with pytest.raises(ValueError, match="--negative-pool"):
        CandidatePool(["test_mining_no_such_pool"])


def test_a_pool_with_annotated_images_is_refused_naming_them_and_the_fix(dataset_name):
    box = {"bbox": [0, 0, 4, 4], "bbox_mode": 1, "category_id": 0}
    records = [
        {"file_name": "n1.png", "image_id": 1, "annotations": []},
        {"file_name": "p1.png", "image_id": 2, "annotations": [box]},
        {"file_name": "p2.png", "image_id": 3, "annotations": [box, box]},
    ]
    name = dataset_name()
    DatasetCatalog.register(name, lambda: records)
    fix = f"--register-subset {name}_negatives {name} negatives"
    with pytest.raises(ValueError, match=rf"'{name}'.* 2 images with annotations.*p1\.png.*{fix}"):
        CandidatePool([name])


def test_pool_images_in_the_training_set_are_refused_however_their_path_is_spelled(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    training = [
        ("train_a", str(tmp_path / "images" / "a.png")),
        ("train_b", str(tmp_path / "images" / "b.png")),
    ]
    check_pool_outside_training_set([("pool", "images/c.png"), ("pool", "a.png")], training)
    pool = [
        ("pool", "images/../images/b.png"),
        ("pool", "images/c.png"),
        ("pool", "./images/a.png"),
    ]
    with pytest.raises(
        ValueError,
        match=r"images/\.\./images/b\.png is in the mining pool 'pool' and in the training set "
        r"'train_b'.*: 2\..*--register-subset train_b_positives train_b positives",
    ):
        check_pool_outside_training_set(pool, training)


def test_resuming_with_other_settings_names_the_setting_and_the_fix():
    check_settings({"per_round": 3.0}, {"per_round": 3.0}, "settings.json")
    with pytest.raises(MiningStateError, match="per_round = 3.0.*5.0.*new OUTPUT_DIR"):
        check_settings({"per_round": 3.0}, {"per_round": 5.0}, "settings.json")


def test_settings_record_the_config_keys_as_settings_json_reads_them_back():
    settings = mining_settings(quick_cfg())
    assert settings["MODEL.HNM.ROI_OHEM.ENABLED"] is False
    # Tuples as lists, as json.load gives them back.
    assert settings["MODEL.ANCHOR_GENERATOR.SIZES"] == [[8], [16], [32], [64], [128]]
    assert settings["INPUT.MIN_SIZE_TRAIN"] == [96]
    assert (settings["SOLVER.BASE_LR"], settings["SOLVER.STEPS"]) == (0.005, [])
    check_settings(json.loads(json.dumps(settings)), mining_settings(quick_cfg()), "settings.json")


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "MODEL.HNM.ROI_OHEM.ENABLED",
            True,
            "MODEL.HNM.ROI_OHEM.ENABLED = False, but this run has True",
        ),
        ("MODEL.WEIGHTS", "other.pth", "MODEL.WEIGHTS = '', but this run has 'other.pth'"),
        ("SOLVER.BASE_LR", 0.01, "SOLVER.BASE_LR = 0.005, but this run has 0.01"),
        ("SEED", 1, "SEED = 0, but this run has 1"),
        ("INPUT.MIN_SIZE_TRAIN", (128,), "INPUT.MIN_SIZE_TRAIN = [96], but this run has [128]"),
        (
            "HNM.DATA.NEGATIVE_FRACTION",
            0.5,
            "HNM.DATA.NEGATIVE_FRACTION = -1.0, but this run has 0.5",
        ),
    ],
)
def test_resuming_with_another_config_value_names_the_key_and_both_values(key, value, message):
    recorded = mining_settings(quick_cfg())
    with pytest.raises(MiningStateError, match=re.escape(f"settings.json records {message}")):
        check_settings(recorded, mining_settings(quick_cfg(key, value)), "settings.json")


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.DEVICE", "cuda"),
        ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.9),
        ("SOLVER.CHECKPOINT_PERIOD", 100),
        ("DATALOADER.NUM_WORKERS", 4),
        ("HNM.MINING.ROUNDS", 5),
    ],
)
def test_a_resume_may_change_what_does_not_shape_the_rounds(key, value):
    recorded = mining_settings(quick_cfg())
    check_settings(recorded, mining_settings(quick_cfg(key, value)), "settings.json")


def test_a_rounds_run_recorded_before_online_mining_existed_refuses_to_resume_online():
    cfg = quick_cfg(
        *("HNM.MINING.POOL", ("synthetic_pool",), "HNM.MINING.PER_ROUND", 3.0),
        *("HNM.MINING.ONLINE", True),
    )
    with pytest.raises(MiningStateError, match="records online = False, but this run has True"):
        check_settings(SETTINGS_WITHOUT_CONFIG_KEYS, mining_settings(cfg), "settings.json")


def test_a_settings_file_without_the_config_keys_does_not_check_them():
    cfg = quick_cfg(
        *("HNM.MINING.POOL", ("synthetic_pool",), "HNM.MINING.PER_ROUND", 3.0),
        *("MODEL.HNM.ROI_OHEM.ENABLED", True),
    )
    check_settings(SETTINGS_WITHOUT_CONFIG_KEYS, mining_settings(cfg), "settings.json")


def test_state_files_round_trip_and_a_corrupt_one_names_the_fix(tmp_path):
    path = tmp_path / "round_1_selection.json"
    write_json_atomically(path, {"image_id": np.int64(7), "score": 0.5})
    assert read_json(path) == {"image_id": 7, "score": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert read_json(tmp_path / "absent.json") is None
    path.write_text('{"image_id": 7, "sco')  # as if written by something non-atomic
    with pytest.raises(MiningStateError, match="round_1_selection.json.*delete it"):
        read_json(path)


# --------------------------------------------------------------------- the loop, in-process


def forget_mined_datasets():
    """Unregister the rounds' datasets, which each mining run registers anew."""
    for name in list(DatasetCatalog.list()):
        if name.startswith("hnm_mined_round_"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


@pytest.fixture(scope="module", autouse=True)
def no_mined_datasets_left_behind():
    forget_mined_datasets()
    yield
    forget_mined_datasets()


def mine_argv(root, out, *flags, pool="synthetic_pool", score_thresh=0.0):
    return (
        ["--config-file", QUICK, "--synthetic", str(root), "--negative-pool", pool]
        + [str(f) for f in flags]
        + ["OUTPUT_DIR", str(out), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(score_thresh)]
    )


def run_mine(root, out, *flags, **kwargs):
    mine.main(mine_argv(root, out, *flags, **kwargs))


def read(path):
    return json.loads(Path(path).read_text())


def mtimes(paths):
    return {str(p): Path(p).stat().st_mtime_ns for p in paths}


def saved_iteration(checkpoint):
    return torch.load(checkpoint, map_location="cpu")["iteration"]


def finished_round_files(mining, k):
    """Files that change if round k is evaluated or trained again."""
    return [
        mining / f"round_{k}.json",
        mining / f"round_{k}" / "model_0000001.pth",
        mining / f"round_{k}" / "model_final.pth",
    ]


@pytest.fixture(scope="module")
def one_round(synthetic_root, tmp_path_factory):
    """A run with --rounds 1 --per-round 3; its files as they were right after it."""
    out = tmp_path_factory.mktemp("mining")
    run_mine(synthetic_root, out, "--rounds", 1, "--per-round", 3)
    mining = out / "mining"
    files = [
        "settings.json",
        "round_0.json",
        "round_1_selection.json",
        "round_1.json",
        "report.json",
    ]
    return {"out": out, "mining": mining, **{f: read(mining / f) for f in files}}


def test_round_0_trains_on_the_training_set_alone(one_round):
    round_0 = one_round["round_0.json"]
    assert round_0["added"] == [] and round_0["train_datasets"] == ["synthetic_train"]
    assert (round_0["train_size"], round_0["pool_size_before"], round_0["pool_size_after"]) == (
        TRAIN_SIZE,
        POOL_SIZE,
        POOL_SIZE,
    )
    assert round_0["training_dir"] == str(one_round["mining"] / "round_0")
    assert saved_iteration(Path(round_0["weights"])) == 3  # SOLVER.MAX_ITER 4
    results = round_0["eval"]["synthetic_test"]
    assert 0 <= results["bbox_positives"]["AP"] <= 100
    assert results["negatives"]["num_images"] == 16
    settings = one_round["settings.json"]
    recorded_flags = {k: v for k, v in settings.items() if "." not in k}
    assert recorded_flags == {**SETTINGS_WITHOUT_CONFIG_KEYS, "SEED": 0, "online": False}
    assert (settings["MODEL.HNM.ROI_OHEM.ENABLED"], settings["SOLVER.MAX_ITER"]) == (False, 4)


def test_the_chosen_images_are_the_pool_images_with_the_highest_scores(one_round, synthetic_root):
    selection = one_round["round_1_selection.json"]
    cfg = quick_cfg("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0)
    model = build_model(cfg)
    AtomicDetectionCheckpointer(model).load(selection["scored_with"], checkpointables=[])
    records = score_pool(model, DatasetCatalog.get("synthetic_pool"), cfg)
    assert len(records) == POOL_SIZE
    expected = select_hardest(records, 3)
    assert names(selection["images"]) == names(expected)
    assert [i["score"] for i in selection["images"]] == pytest.approx(
        [r["score"] for r in expected]
    )
    assert all(i["dataset"] == "synthetic_pool" for i in selection["images"])
    assert selection["scored_with"] == str(one_round["mining"] / "round_0" / "model_final.pth")


def test_round_1_adds_the_selection_and_warm_starts(one_round):
    selection, round_1 = one_round["round_1_selection.json"], one_round["round_1.json"]
    assert round_1["added"] == [
        {k: v for k, v in image.items() if k != "detections"} for image in selection["images"]
    ]
    assert (round_1["pool_size_before"], round_1["pool_size_after"]) == (POOL_SIZE, POOL_SIZE - 3)
    assert round_1["train_size"] == TRAIN_SIZE + 3
    assert round_1["train_datasets"] == ["synthetic_train", "hnm_mined_round_1"]
    assert round_1["initialized_from"] == str(one_round["mining"] / "round_0" / "model_final.pth")
    assert Path(round_1["weights"]).is_file()


def test_the_report_follows_every_round(one_round):
    report = one_round["report.json"]
    assert report["pool"] == ["synthetic_pool"] and report["stop_reason"] is None
    assert (report["rounds_requested"], report["rounds_done"]) == (1, 1)
    rounds = report["rounds"]
    assert [(r["round"], r["images_added"], r["pool_size_after"]) for r in rounds] == [
        (0, 0, POOL_SIZE),
        (1, 3, POOL_SIZE - 3),
    ]
    for r, summary in zip(rounds, (one_round["round_0.json"], one_round["round_1.json"])):
        metrics = r["metrics"]["synthetic_test"]
        results = summary["eval"]["synthetic_test"]
        assert metrics["AP"] == results["bbox_positives"]["AP"]
        assert metrics["AP50"] == results["bbox_positives"]["AP50"]
        assert sorted(metrics["fa_per_image"], key=float) == THRESHOLDS
        assert metrics["fa_per_image"]["0.5"] == results["negatives"]["fa_per_image@0.5"]
        negatives = results["negatives"]
        assert metrics["fa_at_recall"] == {
            r: negatives[f"fa_per_image@recall{r}"] for r in ("0.8", "0.9")
        }
        assert metrics["log_avg_miss_rate"] == negatives["log_avg_miss_rate"]
        assert r["results"] == results  # as train_net.py's results.json has them


@pytest.mark.parametrize("name", ["curves.png", "round_1_mined.png"])
def test_plots_are_png_images(one_round, name):
    path = one_round["mining"] / name
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= 300
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.std() > 5  # something is drawn, not a blank canvas
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize(
    "changed, message",
    [
        (["--per-round", 5], "per_round = 3.0, but this run has 5.0"),
        (
            ["MODEL.HNM.ROI_OHEM.ENABLED", True],
            "MODEL.HNM.ROI_OHEM.ENABLED = False, but this run has True",
        ),
    ],
)
def test_resuming_with_other_settings_fails_before_training(
    one_round, synthetic_root, changed, message
):
    with pytest.raises(MiningStateError, match=re.escape(message)):
        run_mine(synthetic_root, one_round["out"], "--rounds", 2, "--per-round", 3, *changed)
    assert not (one_round["mining"] / "round_2").exists()


def test_a_settings_file_without_the_config_keys_resumes(one_round, synthetic_root, tmp_path):
    # Round 0 of the one-round run, with settings.json as older versions wrote it.
    mining = tmp_path / "mining"
    mining.mkdir()
    shutil.copy(one_round["mining"] / "round_0.json", mining / "round_0.json")
    write_json_atomically(mining / "settings.json", SETTINGS_WITHOUT_CONFIG_KEYS)
    run_mine(synthetic_root, tmp_path, "--rounds", 0, "--per-round", 3)
    report = read(mining / "report.json")
    assert report["rounds_done"] == 0 and report["stop_reason"] is None
    assert report["rounds"][0]["results"] == one_round["round_0.json"]["eval"]["synthetic_test"]
    assert not (mining / "round_0").exists()  # read back, not trained again


def test_a_pool_with_annotated_images_fails_before_round_0_trains(synthetic_root, tmp_path):
    with pytest.raises(
        ValueError, match="'synthetic_test'.* 16 images with annotations among its 32"
    ):
        run_mine(synthetic_root, tmp_path, "--rounds", 1, pool="synthetic_test")
    assert not (tmp_path / "mining").exists()


def test_a_pool_sharing_images_with_the_training_set_fails_before_round_0_trains(
    synthetic_datasets, synthetic_root, tmp_path, dataset_name
):
    pool = register_subset(dataset_name(), "synthetic_train", "negatives")
    shared = [d["file_name"] for d in DatasetCatalog.get("synthetic_train") if is_negative_image(d)]
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"Image {shared[0]} is in the mining pool '{pool}' and in the training set "
            f"'synthetic_train' (DATASETS.TRAIN); pool images in the training set: {len(shared)}."
        ),
    ):
        run_mine(synthetic_root, tmp_path, "--rounds", 1, pool=pool)
    assert not (tmp_path / "mining").exists()


def test_a_pool_numbering_its_images_like_the_training_set_mines_with_the_buffer_on(
    synthetic_datasets, synthetic_root, tmp_path, dataset_name
):
    # Another dataset whose image ids are those of the training set (as two COCO files both
    # numbered from 1): its images join the training set in round 1, and the buffer keeps
    # them apart from the training images of the same ids.
    first_train_id = min(d["image_id"] for d in DatasetCatalog.get("synthetic_train"))
    pool = register_negative_folder(
        dataset_name(), synthetic_root / "pool", ["target"], id_offset=first_train_id
    )
    buffer_on = ["MODEL.HNM.BUFFER.ENABLED", "True", "MODEL.META_ARCHITECTURE", "HNMRCNN"]
    run_mine(synthetic_root, tmp_path, "--rounds", 1, "--per-round", 2, *buffer_on, pool=pool)
    round_1 = read(tmp_path / "mining" / "round_1.json")
    assert [a["image_id"] for a in round_1["added"]] != []
    assert all(a["image_id"] >= first_train_id for a in round_1["added"])
    assert (tmp_path / "mining" / "round_1" / "model_final.pth").exists()


@pytest.fixture(scope="module")
def two_rounds(one_round, synthetic_root):
    """The same command again with --rounds 2: only round 2 is new."""
    mining = one_round["mining"]
    before = mtimes(finished_round_files(mining, 0) + finished_round_files(mining, 1))
    before.update(mtimes([mining / "round_1_selection.json"]))
    run_mine(synthetic_root, one_round["out"], "--rounds", 2, "--per-round", 3)
    return {**one_round, "before": before}


def test_more_rounds_resume_without_redoing_finished_ones(two_rounds):
    mining = two_rounds["mining"]
    assert mtimes(two_rounds["before"]) == two_rounds["before"]  # not trained nor scored again

    round_2 = read(mining / "round_2.json")
    assert (round_2["pool_size_before"], round_2["pool_size_after"]) == (
        POOL_SIZE - 3,
        POOL_SIZE - 6,
    )
    assert round_2["train_size"] == TRAIN_SIZE + 6
    assert round_2["train_datasets"] == [
        "synthetic_train",
        "hnm_mined_round_1",
        "hnm_mined_round_2",
    ]
    assert not set(names(round_2["added"])) & set(names(two_rounds["round_1.json"]["added"]))
    report = read(mining / "report.json")
    assert [r["pool_size_after"] for r in report["rounds"]] == [
        POOL_SIZE,
        POOL_SIZE - 3,
        POOL_SIZE - 6,
    ]


def test_a_round_interrupted_after_training_is_evaluated_without_training(
    two_rounds, synthetic_root
):
    mining = two_rounds["mining"]
    summary_before = read(mining / "round_2.json")
    (mining / "round_2.json").unlink()
    trained = mtimes([mining / "round_2" / "model_final.pth", mining / "round_2_selection.json"])

    run_mine(synthetic_root, two_rounds["out"], "--rounds", 2, "--per-round", 3)

    assert mtimes(trained) == trained
    summary = read(mining / "round_2.json")
    assert summary["added"] == summary_before["added"]
    assert summary["eval"] == summary_before["eval"]  # the same weights, evaluated again


def test_an_interrupted_round_reuses_its_selection_and_resumes_training(two_rounds, synthetic_root):
    mining = two_rounds["mining"]
    round_dir = mining / "round_2"
    # As if killed after the checkpoint of iteration 1: no later checkpoint, no summary.
    for name in ("model_final.pth", "model_0000003.pth"):
        (round_dir / name).unlink()
    (round_dir / "last_checkpoint").write_text("model_0000001.pth")
    added_before = read(mining / "round_2.json")["added"]
    (mining / "round_2.json").unlink()
    kept = mtimes([mining / "round_2_selection.json", *finished_round_files(mining, 1)])
    resumed_from = mtimes([round_dir / "model_0000001.pth"])

    run_mine(synthetic_root, two_rounds["out"], "--rounds", 2, "--per-round", 3)

    assert mtimes(kept) == kept  # not scored again, round 1 untouched
    # Resumed at iteration 2: the checkpoint of iteration 1 is not written again.
    assert mtimes(resumed_from) == resumed_from
    assert saved_iteration(round_dir / "model_0000003.pth") == 3
    assert saved_iteration(round_dir / "model_final.pth") == 3
    assert read(mining / "round_2.json")["added"] == added_before


def test_an_empty_pool_stops_mining_with_a_message(synthetic_root, tmp_path):
    DatasetCatalog.register("test_mining_empty_pool", lambda: [])
    try:
        run_mine(synthetic_root, tmp_path, "--rounds", 2, pool="test_mining_empty_pool")
    finally:
        DatasetCatalog.remove("test_mining_empty_pool")
    report = read(tmp_path / "mining" / "report.json")
    assert report["rounds_done"] == 0 and len(report["rounds"]) == 1
    assert "round 1" in report["stop_reason"] and "test_mining_empty_pool" in report["stop_reason"]
    assert report["stop_reason"] in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "mining" / "curves.png").is_file()
    assert not (tmp_path / "mining" / "round_1").exists()


def test_a_pool_without_detections_stops_mining_with_a_message(one_round, synthetic_root, tmp_path):
    # Round 0 of the one-round run, copied: this run only scores the pool, at a threshold
    # no detection passes.
    mining = tmp_path / "mining"
    (mining / "round_0").mkdir(parents=True)
    for name in ("settings.json", "round_0.json", "round_0/model_final.pth"):
        shutil.copy(one_round["mining"] / name, mining / name)
    run_mine(synthetic_root, tmp_path, "--rounds", 1, "--per-round", 3, score_thresh=1.0)
    report = read(mining / "report.json")
    assert report["rounds_done"] == 0
    assert "round 1" in report["stop_reason"] and "synthetic_pool" in report["stop_reason"]
    assert "SCORE_THRESH_TEST" in report["stop_reason"]
    assert report["stop_reason"] in (tmp_path / "log.txt").read_text()
    assert not (mining / "round_1_selection.json").exists()


@needs_cpu_launch
def test_two_processes_score_shards_and_only_the_main_one_writes(synthetic_root, tmp_path):
    flags = ["--rounds", 1, "--per-round", 0.05, "--iters-per-round", 2, "--from-scratch"]
    argv = mine_argv(synthetic_root, tmp_path, *flags, "--num-gpus", 2)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "hnm_d2.mine", *argv], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    mining = tmp_path / "mining"
    selection = read(mining / "round_1_selection.json")
    assert selection["images_scored"] == POOL_SIZE  # both shards gathered
    assert len(selection["images"]) == 4  # 0.05 of 72 training images, rounded
    round_1 = read(mining / "round_1.json")
    assert (round_1["pool_size_after"], round_1["train_size"]) == (POOL_SIZE - 4, TRAIN_SIZE + 4)
    # --from-scratch: MODEL.WEIGHTS of the config (none), not round 0's weights.
    assert (round_1["initialized_from"], round_1["iterations"]) == ("", 2)
    assert saved_iteration(Path(round_1["weights"])) == 1
    assert read(mining / "report.json")["rounds_done"] == 1
    assert not [p for p in mining.iterdir() if ".tmp-" in p.name]
