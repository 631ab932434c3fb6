"""benchmarks/negative_audit.py: candidates merged across runs, earlier verdicts kept, and the
recount of false alarms at the matched recall by verdict."""

import json
from pathlib import Path

import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def audit():
    return load_script("benchmarks/negative_audit.py")


def write_training(training_dir: Path, detections, score_at_recall, coco_copy=True):
    """A training's evaluation as detectron2 leaves it: image 1 is positive, 2 and 3 negative.
    Detections are COCO's (image id, XYWH box, score); verdicts' boxes are XYXY."""
    inference = training_dir / "inference" / "test"
    (inference / "positives").mkdir(parents=True)  # the evaluator's view of the positives
    coco = {
        "images": [{"id": i, "file_name": f"/data/{i}.jpg"} for i in (1, 2, 3)],
        "annotations": [{"image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 0}],
    }
    if coco_copy:
        (inference / "test_coco_format.json").write_text(json.dumps(coco))
    positives_only = {**coco, "images": coco["images"][:1]}
    (inference / "positives" / "test_positives_coco_format.json").write_text(
        json.dumps(positives_only)
    )
    results = [{"image_id": i, "bbox": box, "score": s} for i, box, s in detections]
    (inference / "coco_instances_results.json").write_text(json.dumps(results))
    evaluation = {"negatives": {"score@recall0.9": score_at_recall}}
    (training_dir / "results.json").write_text(json.dumps(evaluation))
    return training_dir


def run_of(audit, run_dir):
    return audit.Run.from_run_dir(run_dir)


def test_alarms_of_two_runs_on_one_spot_merge_into_one_candidate(audit, tmp_path):
    a = run_of(audit, write_training(tmp_path / "a", [(2, [10, 10, 10, 10], 0.9)], 0.5))
    detections = [(2, [11, 10, 10, 10], 0.6), (3, [0, 0, 5, 5], 0.7)]
    b = run_of(audit, write_training(tmp_path / "b", detections, 0.4))
    assert audit.recall_floor([a, b], 0.9) == 0.4
    candidates = audit.merge_candidates(a.alarms(0.4) + b.alarms(0.4))
    assert [(Path(c["file_name"]).name, c["score"], c["detections"]) for c in candidates] == [
        ("2.jpg", 0.9, 2),
        ("3.jpg", 0.7, 1),
    ]


def test_detections_on_the_positive_image_are_no_candidates(audit, tmp_path):
    run = run_of(audit, write_training(tmp_path / "a", [(1, [30, 30, 10, 10], 0.99)], 0.5))
    assert run.alarms(0.0) == []


def test_only_candidates_no_earlier_verdict_covers_are_new(audit, tmp_path):
    detections = [(2, [10, 10, 10, 10], 0.9), (3, [0, 0, 5, 5], 0.8)]
    run = run_of(audit, write_training(tmp_path / "a", detections, 0.5))
    earlier = [{"file_name": "2.jpg", "box": [10, 10, 21, 20], "verdict": "object"}]
    new = audit.new_candidates(audit.merge_candidates(run.alarms(0.5)), earlier)
    assert [(Path(c["file_name"]).name, c["verdict"]) for c in new] == [("3.jpg", None)]


def test_an_alarm_takes_the_verdict_of_the_box_it_overlaps_most(audit):
    verdicts = [
        {"file_name": "2.jpg", "box": [0, 0, 10, 10], "verdict": "background"},
        {"file_name": "2.jpg", "box": [2, 0, 12, 10], "verdict": "object"},
    ]
    assert audit.best_match("/x/2.jpg", [2, 0, 12, 10], verdicts)["verdict"] == "object"
    assert audit.best_match("/x/3.jpg", [2, 0, 12, 10], verdicts) is None


def test_recount_splits_the_alarms_at_the_recall_threshold_by_verdict(audit, tmp_path):
    detections = [
        (2, [10, 10, 10, 10], 0.9),  # an unannotated object
        (2, [50, 50, 10, 10], 0.5),  # background, scored exactly the threshold: an alarm
        (3, [70, 70, 10, 10], 0.7),  # nobody judged it
        (3, [0, 0, 5, 5], 0.3),  # below the run's threshold at recall 0.9: not an alarm
    ]
    run = run_of(audit, write_training(tmp_path / "a", detections, 0.5))
    verdicts = [
        {"file_name": "2.jpg", "box": [10, 10, 20, 20], "verdict": "object"},
        {"file_name": "2.jpg", "box": [50, 50, 60, 60], "verdict": "background"},
        {"file_name": "3.jpg", "box": [0, 0, 5, 5], "verdict": "object"},
    ]
    assert audit.recount(run, 0.9, verdicts) == {
        "object": 0.5,
        "background": 0.5,
        "no candidate": 0.5,
    }


def test_recount_says_when_the_recall_is_never_reached(audit, tmp_path):
    run = run_of(audit, write_training(tmp_path / "a", [(2, [10, 10, 10, 10], 0.9)], None))
    assert audit.recount(run, 0.9, []) is None


def test_a_nan_threshold_means_the_recall_is_never_reached(audit, tmp_path):
    run = run_of(audit, write_training(tmp_path / "a", [], float("nan")))
    assert run.score_at_recall(0.9) is None
    with pytest.raises(SystemExit, match="--min-score"):
        audit.recall_floor([run], 0.9)


def test_a_mining_run_is_read_from_its_last_round_with_the_first_rounds_coco_copy(audit, tmp_path):
    """detectron2 writes the COCO copy of the test set once per process; a later round's
    directory has none, and the evaluator's positives-only copy must not stand in for it."""
    mining = tmp_path / "run" / "mining"
    write_training(mining / "round_0", [], 0.5)
    last = write_training(mining / "round_1", [(2, [10, 10, 10, 10], 0.8)], 0.6, coco_copy=False)
    report = {"rounds": [{"training_dir": str(last), "results": {"negatives": {}}}]}
    (mining / "report.json").write_text(json.dumps(report))
    run = run_of(audit, tmp_path / "run")
    assert run.negative_ids == {2, 3}
    assert [Path(f).name for f, _, _ in run.alarms(0.5)] == ["2.jpg"]


def test_a_mining_run_moved_elsewhere_is_read_from_its_own_folder(audit, tmp_path):
    """report.json names the absolute path the run was made in; a copy (benchmarks/records/)
    restored under another path reads its own last round, not the one that path names."""
    mining = tmp_path / "restored" / "mining"
    write_training(mining / "round_0", [], 0.5)
    write_training(mining / "round_1", [(3, [0, 0, 5, 5], 0.8)], 0.6, coco_copy=False)
    elsewhere = tmp_path / "made_here" / "mining" / "round_1"  # not on disk any more
    report = {"rounds": [{"training_dir": str(elsewhere), "results": {"negatives": {}}}]}
    (mining / "report.json").write_text(json.dumps(report))
    run = run_of(audit, tmp_path / "restored")
    assert [Path(f).name for f, _, _ in run.alarms(0.5)] == ["3.jpg"]


def test_a_verdicts_file_with_a_missing_verdict_is_refused(audit, tmp_path):
    path = tmp_path / "verdicts.json"
    path.write_text(json.dumps([{"file_name": "2.jpg", "box": [0, 0, 1, 1], "verdict": None}]))
    with pytest.raises(SystemExit, match=r"entries \[0\].*verdict"):
        audit.load_verdicts(path)


def test_a_recount_that_disagrees_with_the_evaluation_is_refused(audit, tmp_path):
    run = run_of(audit, write_training(tmp_path / "a", [(2, [10, 10, 10, 10], 0.9)], 0.5))
    run.results["negatives"]["fa_per_image@recall0.9"] = 1.0  # the evaluator saw 2 alarms
    with pytest.raises(SystemExit, match="not the one the run was evaluated on"):
        audit.recount(run, 0.9, [])
