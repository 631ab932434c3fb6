"""benchmarks/negative_audit.py: candidates merged across runs, verdicts carried over by file
name, and the recount of false alarms at the matched recall by verdict."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "negative_audit.py"


@pytest.fixture(scope="module")
def audit():
    spec = importlib.util.spec_from_file_location("negative_audit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(run_dir: Path, detections, score_at_recall):
    """A run directory as bccd_accuracy.py leaves it: image 1 is positive, 2 and 3 negative.
    Detections are COCO's (image id, XYWH box, score); verdicts' boxes are XYXY."""
    inference = run_dir / "inference" / "test"
    inference.mkdir(parents=True)
    coco = {
        "images": [{"id": i, "file_name": f"/data/{i}.jpg"} for i in (1, 2, 3)],
        "annotations": [{"image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 0}],
    }
    (inference / "test_coco_format.json").write_text(json.dumps(coco))
    results = [{"image_id": i, "bbox": box, "score": s} for i, box, s in detections]
    (inference / "coco_instances_results.json").write_text(json.dumps(results))
    negatives = {"score@recall0.9": score_at_recall}
    (run_dir / "results.json").write_text(json.dumps({"negatives": negatives}))
    return run_dir


def test_alarms_of_two_runs_on_one_spot_merge_into_one_candidate(audit, tmp_path):
    a = audit.Run(write_run(tmp_path / "a", [(2, [10, 10, 20, 20], 0.9)], 0.5))
    b = audit.Run(
        write_run(tmp_path / "b", [(2, [11, 10, 20, 20], 0.6), (3, [0, 0, 5, 5], 0.7)], 0.4)
    )
    assert audit.recall_floor([a, b], 0.9) == 0.4
    candidates = audit.merge_candidates(a.alarms(0.4) + b.alarms(0.4))
    assert [(Path(c["file_name"]).name, c["score"], c["detections"]) for c in candidates] == [
        ("2.jpg", 0.9, 2),
        ("3.jpg", 0.7, 1),
    ]


def test_detections_on_the_positive_image_are_no_candidates(audit, tmp_path):
    run = audit.Run(write_run(tmp_path / "a", [(1, [30, 30, 40, 40], 0.99)], 0.5))
    assert run.alarms(0.0) == []


def test_verdicts_carry_over_by_file_name_and_box(audit, tmp_path):
    run = audit.Run(
        write_run(tmp_path / "a", [(2, [10, 10, 10, 10], 0.9), (3, [0, 0, 5, 5], 0.8)], 0.5)
    )
    earlier = [{"file_name": "2.jpg", "box": [10, 10, 21, 20], "verdict": "object"}]
    candidates = audit.carry_verdicts(audit.merge_candidates(run.alarms(0.5)), earlier)
    assert [c["verdict"] for c in candidates] == ["object", None]


def test_recount_splits_the_alarms_at_the_recall_threshold_by_verdict(audit, tmp_path):
    detections = [
        (2, [10, 10, 10, 10], 0.9),  # an unannotated object
        (2, [50, 50, 10, 10], 0.6),  # background
        (3, [0, 0, 5, 5], 0.3),  # below the run's threshold at recall 0.9: not an alarm
    ]
    run = audit.Run(write_run(tmp_path / "a", detections, 0.5))
    verdicts = [
        {"file_name": "2.jpg", "box": [10, 10, 20, 20], "verdict": "object"},
        {"file_name": "2.jpg", "box": [50, 50, 60, 60], "verdict": "background"},
    ]
    assert audit.recount(run, 0.9, verdicts) == {"object": 0.5, "background": 0.5}


def test_recount_says_when_the_recall_is_never_reached(audit, tmp_path):
    run = audit.Run(write_run(tmp_path / "a", [(2, [10, 10, 20, 20], 0.9)], None))
    assert audit.recount(run, 0.9, []) is None


def test_a_nan_threshold_means_the_recall_is_never_reached(audit, tmp_path):
    run = audit.Run(write_run(tmp_path / "a", [], float("nan")))
    assert run.score_at_recall(0.9) is None
    with pytest.raises(SystemExit, match="--min-score"):
        audit.recall_floor([run], 0.9)
