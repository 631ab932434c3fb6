"""NegativeImageEvaluator beside COCOEvaluator: false alarms on negative images and COCO AP, on
a 6-image dataset.

The dataset (no image files are needed: COCOEvaluator reads only the records):

    id 1  positive   one box, XYWH_ABS [10, 10, 40, 40]
    id 2  positive   one box, XYXY_ABS [20, 30, 60, 90]
    id 3  negative   "annotations": []
    id 4  negative   no "annotations" key
    id 5  negative   "annotations": []
    id 6  positive   a crowd box only (iscrowd=1): shows objects, so not negative

The predictions find both boxes exactly (score 0.9) and put false alarms on the negatives:
image 3 at scores 0.95, 0.6, 0.2; image 4 at 0.5 (exactly on a threshold); image 5 none.
"""

import json
import logging
import math
import os
import uuid

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import launch
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils import comm
from helpers import needs_cpu_launch

from hnm_d2.config import HNMConfigError, add_hnm_config
from hnm_d2.engine.launcher import leave_process_group
from hnm_d2.evaluation import (
    NegativeImageEvaluator,
    build_hnm_evaluator,
    build_negative_evaluator,
)

IMAGE_SIZE = 100

# Predicted (box in XYXY_ABS, score) per image id.
PREDICTIONS = {
    1: [([10, 10, 50, 50], 0.9)],
    2: [([20, 30, 60, 90], 0.9)],
    3: [([0, 0, 30, 30], 0.95), ([50, 50, 90, 90], 0.6), ([60, 0, 99, 40], 0.2)],
    4: [([5, 5, 45, 45], 0.5)],
    5: [],
    6: [],
}

# Counted by hand from PREDICTIONS on the 3 negative images (3, 4, 5), score >= t:
#   t=0.05: 3 + 1 + 0 = 4 detections, images 3 and 4 alarmed
#   t=0.3:  2 + 1 + 0 = 3 detections, images 3 and 4
#   t=0.5:  2 + 1 + 0 = 3 detections (0.5 >= 0.5 counts), images 3 and 4
#   t=0.7:  1 + 0 + 0 = 1 detection,  image 3
EXPECTED_NEGATIVES = {
    "num_images": 3.0,
    "fa_per_image@0.05": 4 / 3,
    "images_with_fa@0.05": 2 / 3,
    "fa_per_image@0.3": 3 / 3,
    "images_with_fa@0.3": 2 / 3,
    "fa_per_image@0.5": 3 / 3,
    "images_with_fa@0.5": 2 / 3,
    "fa_per_image@0.7": 1 / 3,
    "images_with_fa@0.7": 1 / 3,
    # At matched recall, by hand: 2 objects (images 1 and 2; the crowd box does not count).
    # The curve over distinct scores: 0.95 (false alarm, recall 0), 0.9 (both hits, tied:
    # recall 1 with 1 alarm on the 3 negatives), 0.6, 0.5, 0.2 (more alarms). Recall 0.8 and
    # 0.9 both need 2 hits: threshold 0.9, 1/3 false alarm per negative image.
    "fa_per_image@recall0.8": 1 / 3,
    "score@recall0.8": 0.9,
    "fa_per_image@recall0.9": 1 / 3,
    "score@recall0.9": 0.9,
    # MR^-2: false positives per image (6 images) are 1/6 from the top point on, so at the 5
    # references below 1/6 (0.01 ... 0.1) the miss rate is 1, at the 4 from 0.178 on it is 0
    # (floored at 1e-10): exp(mean(log)) = (1e-10) ** (4/9).
    "log_avg_miss_rate": 1e-10 ** (4 / 9),
}

OPERATING_POINT_KEYS = [k for k in EXPECTED_NEGATIVES if "recall" in k or "miss" in k]

# COCO AP on the whole set, by hand: detections by score are 0.95 FP, 0.9 TP, 0.9 TP, then FPs.
# The 2 ground-truth boxes (the crowd box is ignored) are both found at precision 2/3, and the
# interpolated precision (best precision at recall >= r) is 2/3 at every recall level; the boxes
# are exact, so this holds at every IoU threshold: AP = AP50 = AP75 = 100 * 2/3.
EXPECTED_AP_ALL = 100 * 2 / 3


def _record(image_id, annotations=None):
    record = {
        "file_name": f"image_{image_id}.png",
        "image_id": image_id,
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
    }
    if annotations is not None:
        record["annotations"] = annotations
    return record


def _box(bbox, bbox_mode, iscrowd=0):
    return {"bbox": bbox, "bbox_mode": bbox_mode, "category_id": 0, "iscrowd": iscrowd}


def make_records():
    """The 6 records of the module docstring."""
    return [
        _record(1, [_box([10, 10, 40, 40], BoxMode.XYWH_ABS)]),
        _record(2, [_box([20, 30, 60, 90], BoxMode.XYXY_ABS)]),
        _record(3, []),
        _record(4),
        _record(5, []),
        _record(6, [_box([0, 0, 30, 30], BoxMode.XYWH_ABS, iscrowd=1)]),
    ]


def register_dataset(name, records):
    DatasetCatalog.register(name, lambda: records)
    # Contiguous id 0 is COCO category 1, so the evaluators must unmap ids both ways.
    MetadataCatalog.get(name).set(thing_classes=["thing"], thing_dataset_id_to_contiguous_id={1: 0})


def model_output(image_id, predictions=PREDICTIONS):
    """What a detectron2 detector returns for one image: {"instances": Instances}."""
    detections = predictions[image_id]
    instances = Instances((IMAGE_SIZE, IMAGE_SIZE))
    boxes = [box for box, _ in detections]
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.tensor([score for _, score in detections], dtype=torch.float32)
    instances.pred_classes = torch.zeros(len(detections), dtype=torch.int64)
    return {"instances": instances}


def run_evaluation(evaluator, records, predictions=PREDICTIONS):
    evaluator.reset()
    for record in records:
        evaluator.process([record], [model_output(record["image_id"], predictions)])
    return evaluator.evaluate()


def coco_beside_negatives(name, output_dir, **kwargs):
    """The composition HNMTrainer uses: a whole-set COCOEvaluator, then NegativeImageEvaluator."""
    return DatasetEvaluators(
        [
            COCOEvaluator(name, output_dir=output_dir),
            NegativeImageEvaluator(name, output_dir=output_dir, **kwargs),
        ]
    )


def _predicted_image_ids(results_file):
    with open(results_file) as f:
        return {detection["image_id"] for detection in json.load(f)}


@pytest.fixture
def dataset_factory():
    """Registers datasets under unique names and removes them, and their subsets, afterwards."""
    names = []

    def register(records):
        name = f"hnm_eval_test_{uuid.uuid4().hex[:8]}"
        register_dataset(name, records)
        names.append(name)
        return name

    yield register
    for name in names:
        for registered in (name, f"{name}_positives"):
            if registered in DatasetCatalog.list():
                DatasetCatalog.remove(registered)
                MetadataCatalog.remove(registered)


def test_false_alarms_per_threshold_match_hand_count(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    evaluator = NegativeImageEvaluator(name, output_dir=str(tmp_path))

    results = run_evaluation(evaluator, make_records())

    # Only its own keys: "bbox" is COCOEvaluator's, beside it.
    assert list(results) == ["bbox_positives", "negatives"]
    assert results["negatives"] == pytest.approx(EXPECTED_NEGATIVES)


def test_composes_with_coco_evaluator_in_dataset_evaluators(dataset_factory, tmp_path):
    name = dataset_factory(make_records())

    results = run_evaluation(coco_beside_negatives(name, str(tmp_path)), make_records())

    assert list(results) == ["bbox", "bbox_positives", "negatives"]
    assert results["negatives"] == pytest.approx(EXPECTED_NEGATIVES)
    assert results["bbox"]["AP"] == pytest.approx(EXPECTED_AP_ALL, abs=1e-3)
    assert results["bbox_positives"]["AP"] == pytest.approx(100.0)


def test_whole_set_and_positives_files_do_not_overwrite_each_other(dataset_factory, tmp_path):
    name = dataset_factory(make_records())

    run_evaluation(coco_beside_negatives(name, str(tmp_path)), make_records())

    # Images 5 and 6 have no detection, so they are absent from both dumps.
    assert _predicted_image_ids(tmp_path / "coco_instances_results.json") == {1, 2, 3, 4}
    assert _predicted_image_ids(tmp_path / "positives" / "coco_instances_results.json") == {1, 2}


def test_hnm_evaluator_builder_gives_all_three_groups(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    cfg = add_hnm_config(get_cfg())
    cfg.OUTPUT_DIR = str(tmp_path)

    results = run_evaluation(build_hnm_evaluator(cfg, name), make_records())

    assert list(results) == ["bbox", "bbox_positives", "negatives"]
    assert results["bbox"]["AP"] == pytest.approx(EXPECTED_AP_ALL, abs=1e-3)
    assert results["negatives"] == pytest.approx(
        {**EXPECTED_NEGATIVES, "images_at_detection_cap": 0.0}
    )
    inference = tmp_path / "inference"
    assert (inference / "coco_instances_results.json").is_file()
    assert (inference / "positives" / "coco_instances_results.json").is_file()


def test_ap_on_positives_is_perfect_and_lowered_by_false_alarms_on_negatives(
    dataset_factory, tmp_path
):
    name = dataset_factory(make_records())

    results = run_evaluation(coco_beside_negatives(name, str(tmp_path)), make_records())

    for metric in ("AP", "AP50", "AP75"):
        assert results["bbox_positives"][metric] == pytest.approx(100.0)
        assert results["bbox"][metric] == pytest.approx(EXPECTED_AP_ALL, abs=1e-3)


def test_positive_subset_holds_exactly_the_positive_images(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    coco_beside_negatives(name, str(tmp_path))

    subset = f"{name}_positives"
    # Image 6 has only a crowd box: it is positive, not negative.
    assert [r["image_id"] for r in DatasetCatalog.get(subset)] == [1, 2, 6]
    metadata = MetadataCatalog.get(subset)
    assert metadata.thing_classes == ["thing"]
    assert metadata.thing_dataset_id_to_contiguous_id == {1: 0}
    # Each evaluator converted its own JSON; the subset's lists only the positive images.
    assert metadata.json_file == os.path.join(tmp_path, "positives", f"{subset}_coco_format.json")
    assert MetadataCatalog.get(name).json_file == os.path.join(tmp_path, f"{name}_coco_format.json")
    with open(metadata.json_file) as f:
        assert sorted(image["id"] for image in json.load(f)["images"]) == [1, 2, 6]


def test_negative_image_processed_twice_is_counted_once(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    evaluator = NegativeImageEvaluator(name, output_dir=str(tmp_path))
    evaluator.reset()
    for record in make_records() + [make_records()[2]]:  # image 3 again
        evaluator.process([record], [model_output(record["image_id"])])

    assert evaluator.evaluate()["negatives"] == pytest.approx(EXPECTED_NEGATIVES)


def test_dataset_without_negatives_reports_nan_and_warns(dataset_factory, tmp_path, caplog):
    positives = [r for r in make_records() if r["image_id"] in (1, 2)]
    name = dataset_factory(positives)
    with caplog.at_level(logging.WARNING, logger="hnm_d2"):
        evaluator = NegativeImageEvaluator(name, output_dir=str(tmp_path))
        negatives = run_evaluation(evaluator, positives)["negatives"]

    assert negatives["num_images"] == 0.0
    # Rates per negative image cannot be computed; the positives still set the thresholds, and
    # MR^-2 counts false positives on all images (none here: every miss rate is 0, floored).
    per_positive = {"score@recall0.8": 0.9, "score@recall0.9": 0.9, "log_avg_miss_rate": 1e-10}
    assert {k: negatives[k] for k in per_positive} == pytest.approx(per_positive)
    assert all(
        math.isnan(v) for k, v in negatives.items() if k not in {"num_images", *per_positive}
    )
    assert len([r for r in caplog.records if "has no negative image" in r.getMessage()]) == 1


def test_dataset_without_positives_skips_positive_ap(dataset_factory, tmp_path, caplog):
    negatives = [r for r in make_records() if r["image_id"] in (3, 4, 5)]
    name = dataset_factory(negatives)
    with caplog.at_level(logging.WARNING, logger="hnm_d2"):
        evaluator = NegativeImageEvaluator(name, output_dir=str(tmp_path))
    results = run_evaluation(evaluator, negatives)

    assert f"{name}_positives" not in DatasetCatalog.list()
    assert any("'bbox_positives' is skipped" in r.getMessage() for r in caplog.records)
    # Without any ground truth COCOEvaluator reports no AP; the false alarms remain, and
    # without objects there is no recall to match (NaN, never 0).
    assert list(results) == ["negatives"]
    at_thresholds = {k: v for k, v in results["negatives"].items() if k in OPERATING_POINT_KEYS}
    assert all(math.isnan(v) for v in at_thresholds.values()) and len(at_thresholds) == 5
    others = {k: v for k, v in EXPECTED_NEGATIVES.items() if k not in OPERATING_POINT_KEYS}
    assert {k: results["negatives"][k] for k in others} == pytest.approx(others)


def test_nothing_processed_returns_empty_like_coco_evaluator(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    evaluator = NegativeImageEvaluator(name, output_dir=str(tmp_path))
    evaluator.reset()

    assert evaluator.evaluate() == {}


def test_nothing_processed_returns_empty_beside_coco_evaluator(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    evaluator = coco_beside_negatives(name, str(tmp_path))
    evaluator.reset()

    assert evaluator.evaluate() == {}


def _warnings(caplog, text):
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_thresholds_below_model_score_floor_warn_with_key_and_fix(
    dataset_factory, tmp_path, caplog
):
    name = dataset_factory(make_records())
    with caplog.at_level(logging.WARNING, logger="hnm_d2"):
        NegativeImageEvaluator(
            name,
            output_dir=str(tmp_path),
            score_thresholds=(0.05, 0.3, 0.5),
            score_thresh_test=0.4,
        )

    (warning,) = _warnings(caplog, "MODEL.ROI_HEADS.SCORE_THRESH_TEST")
    message = warning.getMessage()
    assert "HNM.EVAL.SCORE_THRESHOLDS has 0.05, 0.3 below" in message
    assert "MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.4" in message
    assert "Lower MODEL.ROI_HEADS.SCORE_THRESH_TEST to at most 0.05" in message


@pytest.mark.parametrize("score_thresh_test", [0.05, 0.01, None])
def test_thresholds_at_or_above_model_score_floor_do_not_warn(
    dataset_factory, tmp_path, caplog, score_thresh_test
):
    name = dataset_factory(make_records())
    with caplog.at_level(logging.WARNING, logger="hnm_d2"):
        NegativeImageEvaluator(name, output_dir=str(tmp_path), score_thresh_test=score_thresh_test)

    assert not _warnings(caplog, "SCORE_THRESH_TEST")


def test_factory_passes_model_score_floor_from_config(dataset_factory, tmp_path, caplog):
    name = dataset_factory(make_records())
    cfg = add_hnm_config(get_cfg())
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.3
    with caplog.at_level(logging.WARNING, logger="hnm_d2"):
        build_negative_evaluator(cfg, name, output_dir=str(tmp_path))

    (warning,) = _warnings(caplog, "MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.3")
    assert "has 0.05 below" in warning.getMessage()


# Negative images whose detection count reaches the cap, counted by hand from PREDICTIONS
# (image 3: 3 detections, image 4: 1, image 5: 0). Positive images 1 and 2 have 1 detection
# each: they reach a cap of 1 but are not counted, their false alarms are not measured.
@pytest.mark.parametrize("cap, capped", [(4, 0), (3, 1), (1, 2)])
def test_negative_images_at_detection_cap_are_counted(dataset_factory, tmp_path, cap, capped):
    name = dataset_factory(make_records())
    evaluator = NegativeImageEvaluator(name, output_dir=str(tmp_path), detections_per_image=cap)

    negatives = run_evaluation(evaluator, make_records())["negatives"]

    assert negatives == pytest.approx(
        {**EXPECTED_NEGATIVES, "images_at_detection_cap": float(capped)}
    )


def test_detection_cap_reached_warns_with_key_count_and_fix(dataset_factory, tmp_path, caplog):
    name = dataset_factory(make_records())
    cfg = add_hnm_config(get_cfg())
    cfg.TEST.DETECTIONS_PER_IMAGE = 3
    evaluator = build_negative_evaluator(cfg, name, output_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="hnm_d2"):
        negatives = run_evaluation(evaluator, make_records())["negatives"]

    assert negatives["images_at_detection_cap"] == 1.0
    (warning,) = _warnings(caplog, "TEST.DETECTIONS_PER_IMAGE")
    message = warning.getMessage()
    assert (
        f"1 of the 3 negative images of '{name}' reached TEST.DETECTIONS_PER_IMAGE = 3" in message
    )
    assert "Raise TEST.DETECTIONS_PER_IMAGE" in message


@pytest.mark.parametrize("cap", [None, -1])
def test_without_detection_cap_nothing_is_reported(dataset_factory, tmp_path, caplog, cap):
    name = dataset_factory(make_records())
    evaluator = NegativeImageEvaluator(name, output_dir=str(tmp_path), detections_per_image=cap)
    with caplog.at_level(logging.WARNING, logger="hnm_d2"):
        negatives = run_evaluation(evaluator, make_records())["negatives"]

    assert negatives == pytest.approx(EXPECTED_NEGATIVES)
    assert not _warnings(caplog, "DETECTIONS_PER_IMAGE")


def test_record_without_image_id_names_dataset_record_and_field(dataset_factory, tmp_path):
    records = make_records()
    del records[3]["image_id"]
    name = dataset_factory(records)

    with pytest.raises(ValueError, match=rf"'{name}', record 3 \(image_4.png\).*'image_id'"):
        NegativeImageEvaluator(name, output_dir=str(tmp_path))


def test_factory_reads_thresholds_from_config(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    cfg = add_hnm_config(get_cfg())
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.HNM.EVAL.SCORE_THRESHOLDS = [0.5]

    negatives = run_evaluation(build_negative_evaluator(cfg, name), make_records())["negatives"]

    # At 0.5: images 3 (0.95, 0.6) and 4 (0.5) alarmed, 3 detections on 3 negative images;
    # none reaches TEST.DETECTIONS_PER_IMAGE (100).
    assert negatives == pytest.approx(
        {
            "num_images": 3.0,
            "fa_per_image@0.5": 1.0,
            "images_with_fa@0.5": 2 / 3,
            "images_at_detection_cap": 0.0,
            **{k: EXPECTED_NEGATIVES[k] for k in OPERATING_POINT_KEYS},
        }
    )
    assert os.path.exists(os.path.join(tmp_path, "inference", "positives"))


def test_factory_rejects_threshold_out_of_range(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    cfg = add_hnm_config(get_cfg())
    cfg.HNM.EVAL.SCORE_THRESHOLDS = [0.5, 1.5]

    with pytest.raises(HNMConfigError, match="HNM.EVAL.SCORE_THRESHOLDS"):
        build_negative_evaluator(cfg, name, output_dir=str(tmp_path))


def _evaluate_half_per_rank(name, output_dir, result_dir):
    """Worker of the distributed test: each of the 2 ranks processes every other image."""
    register_dataset(name, make_records())
    evaluator = coco_beside_negatives(name, output_dir, detections_per_image=1)
    rank = comm.get_rank()
    results = run_evaluation(evaluator, make_records()[rank::2])
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    leave_process_group()


@needs_cpu_launch
def test_two_process_results_equal_single_process_results(dataset_factory, tmp_path):
    name = dataset_factory(make_records())
    single = run_evaluation(
        coco_beside_negatives(name, str(tmp_path / "single"), detections_per_image=1),
        make_records(),
    )

    launch(
        _evaluate_half_per_rank,
        num_gpus_per_machine=2,
        dist_url="auto",
        args=(f"{name}_dist", str(tmp_path / "dist"), str(tmp_path)),
    )

    with open(tmp_path / "rank0.json") as f:
        main = json.load(f)
    with open(tmp_path / "rank1.json") as f:
        assert json.load(f) == {}
    assert list(main) == list(single)
    for task, metrics in single.items():
        assert main[task] == pytest.approx(metrics, nan_ok=True)
    # Images 3 (rank 0) and 4 (rank 1) reach the cap of 1: gathered from both ranks.
    assert main["negatives"] == pytest.approx(
        {**EXPECTED_NEGATIVES, "images_at_detection_cap": 2.0}
    )


def test_two_records_with_one_image_id_fail_naming_the_record(dataset_factory, tmp_path):
    records = make_records()
    records[4] = {**records[4], "image_id": 3}  # image 5 takes image 3's id
    name = dataset_factory(records)
    with pytest.raises(ValueError, match=f"'{name}', record 4 .*image_id 3 is used by an earlier"):
        NegativeImageEvaluator(name, output_dir=str(tmp_path))
