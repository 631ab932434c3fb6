"""benchmarks/paired_bootstrap.py: benchmark run directories read into test images (the method
itself is tested in test_bootstrap.py), audited alarms left out, runs that disagree refused."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import load_script

# Image 1 is positive, with two objects; images 2 and 3 are negative. Detections are COCO's
# (image id, XYWH box, score).
OBJECTS = [[0, 0, 10, 10], [20, 20, 10, 10]]
HITS_AND_A_MISS = [(1, [0, 0, 10, 10], 0.9), (1, [20, 20, 10, 10], 0.6), (1, [50, 50, 5, 5], 0.7)]
# At recall 1 the threshold is 0.6 (the second hit): two alarms on image 2, none on image 3.
ALARMS = [(2, [5, 5, 10, 10], 0.8), (2, [30, 30, 10, 10], 0.62), (3, [0, 0, 8, 8], 0.5)]


@pytest.fixture(scope="module")
def bootstrap():
    return load_script("benchmarks/paired_bootstrap.py")


def write_run(run_dir: Path, detections, images=(1, 2, 3), evaluated=None):
    """A benchmark run as detectron2 and the evaluator leave it; ``evaluated`` is its own
    false alarms per negative image at recall 1 (results.json), if given."""
    inference = run_dir / "inference" / "test"
    inference.mkdir(parents=True)
    coco = {
        "images": [{"id": i, "file_name": f"/data/{i}.jpg"} for i in images],
        "annotations": [
            {"image_id": 1, "bbox": box, "category_id": 0, "iscrowd": 0} for box in OBJECTS
        ],
    }
    (inference / "test_coco_format.json").write_text(json.dumps(coco))
    results = [
        {"image_id": i, "bbox": box, "score": s, "category_id": 0} for i, box, s in detections
    ]
    (inference / "coco_instances_results.json").write_text(json.dumps(results))
    negatives = {} if evaluated is None else {"fa_per_image@recall1": evaluated}
    (run_dir / "results.json").write_text(json.dumps({"negatives": negatives}))
    return run_dir


def images_of(bootstrap, run_dir, verdicts=None):
    run = bootstrap.Run.from_run_dir(run_dir)
    images = bootstrap.run_images(run)
    return images if verdicts is None else bootstrap.without_judged_objects(run, images, verdicts)


def test_a_run_dir_reads_as_the_evaluation_saw_it(bootstrap, tmp_path):
    """The script's side: a run folder becomes the images and detections the package's method
    draws from (the method itself: tests/test_bootstrap.py)."""
    images = images_of(bootstrap, write_run(tmp_path / "a", HITS_AND_A_MISS + ALARMS))
    assert images.positive_ids == (1,) and images.negative_ids == (2, 3)
    everything = (np.array([0]), np.array([0, 1]))
    assert bootstrap.alarms_at_recall(images, *everything, recall=1.0) == 1.0  # 2 alarms / 2


def test_an_alarm_judged_an_object_is_not_counted(bootstrap, tmp_path):
    run_dir = write_run(tmp_path / "a", HITS_AND_A_MISS + ALARMS)
    verdicts = [{"file_name": "2.jpg", "box": [5, 5, 15, 15], "verdict": "object"}]
    everything = (np.array([0]), np.array([0, 1]))
    audited = images_of(bootstrap, run_dir, verdicts)
    assert bootstrap.alarms_at_recall(audited, *everything, recall=1.0) == 0.5
    verdicts[0]["verdict"] = "background"
    background = images_of(bootstrap, run_dir, verdicts)
    assert bootstrap.alarms_at_recall(background, *everything, recall=1.0) == 1.0


def test_a_run_disagreeing_with_its_own_evaluation_is_refused(bootstrap, tmp_path):
    agrees = write_run(tmp_path / "a", HITS_AND_A_MISS + ALARMS, evaluated=1.0)
    assert len(bootstrap.load_setting([agrees], 1.0, None)) == 1
    disagrees = write_run(tmp_path / "b", HITS_AND_A_MISS + ALARMS, evaluated=0.5)
    with pytest.raises(SystemExit, match="not the one the run was evaluated on"):
        bootstrap.load_setting([disagrees], 1.0, None)


def test_runs_on_other_test_images_are_refused(bootstrap, tmp_path):
    a = images_of(bootstrap, write_run(tmp_path / "a", HITS_AND_A_MISS))
    b = images_of(bootstrap, write_run(tmp_path / "b", HITS_AND_A_MISS, images=(1, 2, 4)))
    with pytest.raises(SystemExit, match="other test images"):
        bootstrap.check_same_test_set(["a", "b"], [a, b])
