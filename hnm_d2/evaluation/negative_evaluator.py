"""False alarms on negative images, beside COCO AP: ``NegativeImageEvaluator``.

A *negative image* is a dataset record whose "annotations" list is empty or missing
(``hnm_d2.data.is_negative_image``). An image whose only annotations are crowd regions
(``iscrowd=1``) is *not* negative: it shows objects, and COCO ignores detections on a crowd
region instead of counting them as false positives. Every image that is not negative is
*positive*.

``NegativeImageEvaluator.evaluate()`` returns detectron2's ``task -> {metric: float}`` format
with its own keys only, so that it composes with detectron2's ``COCOEvaluator`` in
``DatasetEvaluators`` (which rejects two evaluators returning the same key):

* ``"bbox_positives"`` (one ``"<task>_positives"`` per task): COCO AP on the positive images
  alone (the derived dataset ``"<dataset_name>_positives"``), the figure comparable with a test
  set without negatives.
* ``"negatives"``: ``"num_images"`` (negative images evaluated) and, per score threshold t,
  ``"fa_per_image@t"`` (detections with score >= t per negative image) and
  ``"images_with_fa@t"`` (the *fraction* in [0, 1], not percent, of negative images with at
  least one such detection). With no negative image evaluated the per-threshold values are
  NaN, detectron2's "cannot be computed". When the model's cap on detections per image is
  known, ``"images_at_detection_cap"`` counts the negative images that reached it (their
  false alarms are lower bounds).
  At the same operating point (:mod:`hnm_d2.evaluation.operating_point`), per recall level r:
  ``"fa_per_image@recall<r>"``, the false alarms per negative image at the highest score
  threshold that finds the share r of the objects on the positive images (IoU 0.5), and
  ``"score@recall<r>"``, that threshold; both NaN where the detector never reaches r. And
  ``"log_avg_miss_rate"``: the Caltech benchmark's MR^-2, false positives counted on all test
  images. The curve behind them is written to ``<output_dir>/froc.json`` and drawn in
  ``<output_dir>/froc.png``.

:func:`build_hnm_evaluator` adds ``"bbox"``, COCO AP on the whole test set (negatives
included: each detection on them is a false positive that lowers precision), from a plain
``COCOEvaluator`` beside a NegativeImageEvaluator.

Distributed: each rank keeps its own predictions; ``evaluate()`` gathers them on the main
process, which alone returns results (the other ranks return ``{}``), as ``COCOEvaluator`` does.
"""

import logging
import math
import os
from collections import OrderedDict
from typing import NamedTuple

import detectron2.utils.comm as comm
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.structures import BoxMode
from tabulate import tabulate

from ..config import validate_hnm_config
from ..data.subsets import is_negative_image, register_subset
from .froc import plot_froc, save_curve
from .operating_point import (
    detection_curve,
    false_alarms_at_recall,
    log_average_miss_rate,
    match_detections,
)

__all__ = [
    "NegativeImageEvaluator",
    "build_hnm_evaluator",
    "build_negative_evaluator",
    "positive_subset_name",
    "count_detections_at_thresholds",
    "summarize_false_alarms",
    "summarize_operating_points",
]

logger = logging.getLogger(__name__)


def positive_subset_name(dataset_name):
    """Name of the derived dataset that holds the positive images of ``dataset_name``."""
    return f"{dataset_name}_positives"


def count_detections_at_thresholds(scores, thresholds):
    """Number of detections scored at or above each threshold.

    Args:
        scores (Tensor): shape (N,), the detection scores of one image.
        thresholds (Sequence[float]): score thresholds.

    Returns:
        tuple[int]: one count per threshold, in the order of ``thresholds``.
    """
    return tuple(int((scores >= t).sum()) for t in thresholds)


def summarize_false_alarms(counts_per_image, thresholds):
    """The "negatives" metrics from per-image detection counts.

    Args:
        counts_per_image (dict): image_id -> tuple of detection counts on that negative image,
            one per threshold (see :func:`count_detections_at_thresholds`).
        thresholds (Sequence[float]): the thresholds the counts were taken at.

    Returns:
        dict[str, float]: "num_images", then per threshold t "fa_per_image@t" (detections per
        negative image) and "images_with_fa@t" (fraction of negative images with a detection).
    """
    num_images = len(counts_per_image)
    summary = {"num_images": float(num_images)}
    for index, threshold in enumerate(thresholds):
        counts = [image_counts[index] for image_counts in counts_per_image.values()]
        summary[f"fa_per_image@{threshold:g}"] = _ratio(sum(counts), num_images)
        summary[f"images_with_fa@{threshold:g}"] = _ratio(sum(c > 0 for c in counts), num_images)
    return summary


def _false_alarm_table(summary, thresholds):
    """The per-threshold metrics of :func:`summarize_false_alarms` as a table, one row per
    threshold (one wide row of 2 x thresholds columns would not fit a log line).

    Returns:
        str: a pipe table with the columns "score >=", "fa_per_image", "images_with_fa".
    """
    rows = [
        (f"{t:g}", summary[f"fa_per_image@{t:g}"], summary[f"images_with_fa@{t:g}"])
        for t in thresholds
    ]
    return tabulate(
        rows,
        headers=["score >=", "fa_per_image", "images_with_fa"],
        tablefmt="pipe",
        floatfmt=".3f",
        numalign="center",
    )


def summarize_operating_points(curve, recalls):
    """The "negatives" metrics at matched recall, from the curve of the whole test set.

    Returns:
        dict[str, float]: per recall level r, "fa_per_image@recall<r>" and "score@recall<r>"
        (NaN where r is never reached), and "log_avg_miss_rate".
    """
    summary = {}
    for recall in recalls:
        false_alarms, threshold = false_alarms_at_recall(curve, recall)
        summary[f"fa_per_image@recall{recall:g}"] = false_alarms
        summary[f"score@recall{recall:g}"] = threshold
    summary["log_avg_miss_rate"] = log_average_miss_rate(curve)
    return summary


def _operating_point_line(summary, recalls, curve):
    """One readable line: false alarms at each recall level ("n/a" where never reached)."""
    parts = []
    for recall in recalls:
        false_alarms = summary[f"fa_per_image@recall{recall:g}"]
        if math.isnan(false_alarms):
            reached = max(curve.recall, default=0.0)
            parts.append(f"recall {recall:g}: n/a (the detector reaches {reached:.3f})")
        else:
            threshold = summary[f"score@recall{recall:g}"]
            parts.append(f"recall {recall:g}: {false_alarms:.3f} (score >= {threshold:.3f})")
    return "; ".join(parts) + f"; MR^-2 {summary['log_avg_miss_rate']:.3f}"


class GroundTruth(NamedTuple):
    """The objects of one positive image, XYXY in original image coordinates.

    Attributes:
        boxes (Tensor): (G, 4) boxes of the objects that count; classes (G,) int64.
        crowd_boxes (Tensor): (C, 4) crowd regions (detections there are ignored);
            crowd_classes (C,) their classes.
    """

    boxes: torch.Tensor
    classes: torch.Tensor
    crowd_boxes: torch.Tensor
    crowd_classes: torch.Tensor


def ground_truth(record) -> GroundTruth:
    """The objects and crowd regions of a dataset record (detectron2's dataset dict)."""
    objects, crowd = ([], []), ([], [])
    for annotation in record.get("annotations", []):
        box = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
        boxes, classes = crowd if annotation.get("iscrowd", 0) else objects
        boxes.append(box)
        classes.append(annotation["category_id"])
    return GroundTruth(
        torch.tensor(objects[0], dtype=torch.float32).reshape(-1, 4),
        torch.tensor(objects[1], dtype=torch.int64),
        torch.tensor(crowd[0], dtype=torch.float32).reshape(-1, 4),
        torch.tensor(crowd[1], dtype=torch.int64),
    )


def _ratio(numerator, denominator):
    # With no negative image there is no rate: NaN (detectron2's "cannot be computed"), not 0,
    # which would read as a perfect score.
    return numerator / denominator if denominator else float("nan")


class NegativeImageEvaluator(DatasetEvaluator):
    """COCO AP on the positive images, and false alarms on the negative ones.

    Wraps a detectron2 ``COCOEvaluator`` on the derived dataset ``"<dataset_name>_positives"``,
    fed only the positive images. COCO AP on the whole set is left to a plain ``COCOEvaluator``
    beside it (:func:`build_hnm_evaluator`). See the module docstring for the result keys.
    """

    def __init__(
        self,
        dataset_name,
        output_dir=None,
        score_thresholds=(0.05, 0.3, 0.5, 0.7),
        distributed=True,
        tasks=("bbox",),
        score_thresh_test=None,
        detections_per_image=None,
        recalls=(0.8, 0.9),
        match_iou=0.5,
    ):
        """
        Args:
            dataset_name (str): registered dataset; every record needs an "image_id".
            output_dir (str or None): the positive subset's COCOEvaluator dumps its predictions
                and converted COCO JSON to ``<output_dir>/positives``, apart from the files of
                a whole-set COCOEvaluator given the same ``output_dir``. Required when the
                dataset has positive images.
            score_thresholds (Sequence[float]): thresholds in [0, 1] at which false alarms are
                counted (score >= t); duplicates are dropped and the rest sorted.
            distributed (bool): gather predictions from all ranks and return results on the
                main process only; False evaluates what this process saw.
            tasks (tuple[str]): COCO tasks, passed to COCOEvaluator.
            score_thresh_test (float or None): the model's minimum output score
                (MODEL.ROI_HEADS.SCORE_THRESH_TEST); a warning names the score thresholds
                below it, where false alarms are undercounted. None: not checked.
            detections_per_image (int or None): the model's cap on detections per image
                (TEST.DETECTIONS_PER_IMAGE); negative images whose output reaches it are
                counted and reported. None or negative (detectron2's "no cap"): not checked.
            recalls (Sequence[float]): recall levels in (0, 1] at which false alarms per
                negative image are reported (HNM.EVAL.RECALLS).
            match_iou (float): IoU at which a detection finds an object (HNM.EVAL.MATCH_IOU).
        """
        self._dataset_name = dataset_name
        self._thresholds = _checked_thresholds(score_thresholds)
        self._recalls = tuple(sorted({float(r) for r in recalls}))
        self._match_iou = match_iou
        self._output_dir = output_dir
        self._distributed = distributed
        if score_thresh_test is not None:
            _warn_if_thresholds_below_model_floor(self._thresholds, score_thresh_test)
        self._detection_cap = (
            detections_per_image
            if detections_per_image is not None and detections_per_image >= 0
            else None
        )
        self._negative_ids, self._truth = _index_images(dataset_name)
        self._positive_ids = set(self._truth)
        if not self._negative_ids:
            logger.warning(
                "Dataset '%s' has no negative image (a record with empty or missing "
                "'annotations'): the 'negatives' metrics will be NaN.",
                dataset_name,
            )
        self._positive_images = self._build_positives_evaluator(tasks, output_dir)
        self.reset()

    def _build_positives_evaluator(self, tasks, output_dir):
        subset_name = positive_subset_name(self._dataset_name)
        if not self._positive_ids:
            logger.warning(
                "Dataset '%s' has no positive image (every record's 'annotations' is empty or "
                "missing): 'bbox_positives' is skipped.",
                self._dataset_name,
            )
            return None
        if output_dir is None:
            raise ValueError(
                f"NegativeImageEvaluator('{self._dataset_name}') needs output_dir: the positive "
                f"images are evaluated as the derived dataset '{subset_name}', which "
                "COCOEvaluator converts to COCO JSON there. Pass output_dir, e.g. "
                "os.path.join(cfg.OUTPUT_DIR, 'inference')."
            )
        return COCOEvaluator(
            register_subset(subset_name, self._dataset_name, "positives"),
            tasks=tasks,
            distributed=self._distributed,
            # Its own folder: its predictions dump and converted JSON must not overwrite
            # those of a whole-set COCOEvaluator given the same output_dir.
            output_dir=os.path.join(output_dir, "positives"),
        )

    def reset(self):
        if self._positive_images is not None:
            self._positive_images.reset()
        # image_id -> detection scores (negative images) or match outcomes and scores (positive
        # images); keyed by id so that an image processed twice (e.g. a padded distributed
        # sampler) is counted once.
        self._negative_scores = {}
        self._positive_outcomes = {}
        # The negative images whose detections reached the cap; a set for the same reason.
        self._capped_ids = set()

    def process(self, inputs, outputs):
        """Feed a batch's positive images to the subset evaluator, and count detections on its
        negative images.

        Args:
            inputs (list[dict]): model inputs, each with "image_id".
            outputs (list[dict]): model outputs; those with "instances" (pred_boxes, scores,
                pred_classes) are counted, others (proposals only) are left to COCOEvaluator.
        """
        if self._positive_images is not None:
            positive = [k for k, x in enumerate(inputs) if x["image_id"] in self._positive_ids]
            self._positive_images.process(
                [inputs[k] for k in positive], [outputs[k] for k in positive]
            )
        for x, output in zip(inputs, outputs):
            if "instances" not in output:
                continue
            instances = output["instances"].to("cpu")
            if x["image_id"] in self._negative_ids:
                self._record_negative(x["image_id"], instances)
            elif x["image_id"] in self._truth:
                self._record_positive(x["image_id"], instances)

    def _record_negative(self, image_id, instances):
        self._negative_scores[image_id] = instances.scores.numpy()
        if self._detection_cap is not None and len(instances) >= self._detection_cap:
            self._capped_ids.add(image_id)

    def _record_positive(self, image_id, instances):
        truth = self._truth[image_id]
        outcome = match_detections(
            instances.pred_boxes.tensor,
            instances.scores,
            instances.pred_classes,
            truth.boxes,
            truth.classes,
            truth.crowd_boxes,
            truth.crowd_classes,
            self._match_iou,
        )
        self._positive_outcomes[image_id] = (instances.scores.numpy(), outcome.numpy())

    def evaluate(self):
        """Gather (when distributed) and compute the metrics.

        Returns:
            OrderedDict: "bbox_positives" (one ``<task>_positives`` per task) and "negatives"
            on the main process; ``{}`` on the other ranks, and ``{}`` when nothing was
            processed.
        """
        # Every rank must run the same collective calls in the same order: the subset's
        # COCOEvaluator gathers, then the negative images' counts are gathered.
        results = OrderedDict()
        if self._positive_images is not None:
            for task, metrics in self._positive_images.evaluate().items():
                results[f"{task}_positives"] = metrics
        negative_scores, positive_outcomes, capped_ids = self._gather()
        if self._distributed and not comm.is_main_process():
            return {}
        if not results and not negative_scores:
            return {}
        self._warn_if_negatives_missing(negative_scores)
        negative_counts = {
            image_id: count_detections_at_thresholds(torch.as_tensor(scores), self._thresholds)
            for image_id, scores in negative_scores.items()
        }
        results["negatives"] = summarize_false_alarms(negative_counts, self._thresholds)
        curve = self._curve(negative_scores, positive_outcomes)
        results["negatives"].update(summarize_operating_points(curve, self._recalls))
        self._write_curve(curve)
        if self._detection_cap is not None:
            self._warn_if_detections_capped(len(capped_ids), len(negative_counts))
            results["negatives"]["images_at_detection_cap"] = float(len(capped_ids))
        logger.info(
            "False alarms on the %d negative images of '%s':\n%s",
            len(negative_counts),
            self._dataset_name,
            _false_alarm_table(results["negatives"], self._thresholds),
        )
        logger.info(
            "False alarms per negative image of '%s' at matched recall: %s",
            self._dataset_name,
            _operating_point_line(results["negatives"], self._recalls, curve),
        )
        return results

    def _gather(self):
        """Every rank's negative scores, positive outcomes and capped ids (main process).

        Returns:
            tuple[dict, dict, set]: image_id -> scores (negative images), image_id -> (scores,
            outcomes) (positive images), and the ids that reached the detection cap; empty on
            the ranks other than the main one.
        """
        mine = (self._negative_scores, self._positive_outcomes, self._capped_ids)
        if not self._distributed:
            return dict(mine[0]), dict(mine[1]), set(mine[2])
        comm.synchronize()
        negatives, positives, capped_ids = {}, {}, set()
        # gather returns [] on the other ranks; an image seen by two ranks is merged by its id.
        for rank_negatives, rank_positives, rank_capped in comm.gather(mine, dst=0):
            negatives.update(rank_negatives)
            positives.update(rank_positives)
            capped_ids |= rank_capped
        return negatives, positives, capped_ids

    def _curve(self, negative_scores, positive_outcomes):
        """The detection curve of the evaluated images (the objects of the positive images
        processed; a warning names the negative images missing)."""
        scores = [positive_outcomes[i][0] for i in positive_outcomes]
        outcomes = [positive_outcomes[i][1] for i in positive_outcomes]
        num_objects = sum(len(self._truth[i].boxes) for i in positive_outcomes)
        return detection_curve(scores, outcomes, list(negative_scores.values()), num_objects)

    def _write_curve(self, curve):
        if self._output_dir is None:
            return
        save_curve(curve, os.path.join(self._output_dir, "froc.json"))
        plot_froc({self._dataset_name: curve}, os.path.join(self._output_dir, "froc.png"))

    def _warn_if_negatives_missing(self, negative_scores):
        if len(negative_scores) < len(self._negative_ids):
            logger.warning(
                "Only %d of the %d negative images of '%s' were evaluated: the 'negatives' "
                "metrics cover those alone.",
                len(negative_scores),
                len(self._negative_ids),
                self._dataset_name,
            )

    def _warn_if_detections_capped(self, num_capped, num_negatives):
        if num_capped:
            logger.warning(
                "%d of the %d negative images of '%s' reached TEST.DETECTIONS_PER_IMAGE = %d "
                "detections: the model may have found more on them, so their false alarms are "
                "undercounted. Raise TEST.DETECTIONS_PER_IMAGE (e.g. to %d) and evaluate again.",
                num_capped,
                num_negatives,
                self._dataset_name,
                self._detection_cap,
                2 * max(self._detection_cap, 1),
            )


def _checked_thresholds(score_thresholds):
    thresholds = sorted({float(t) for t in score_thresholds})
    if not thresholds or not all(0 <= t <= 1 for t in thresholds):
        raise ValueError(
            f"score_thresholds = {list(score_thresholds)!r} is invalid: give a non-empty list of "
            "scores in [0, 1] (config key HNM.EVAL.SCORE_THRESHOLDS)."
        )
    return tuple(thresholds)


def _warn_if_thresholds_below_model_floor(thresholds, score_thresh_test):
    # The model drops detections scored at or below SCORE_THRESH_TEST, so a count at a lower
    # threshold silently equals the count at SCORE_THRESH_TEST.
    below = [t for t in thresholds if t < score_thresh_test]
    if below:
        logger.warning(
            "HNM.EVAL.SCORE_THRESHOLDS has %s below MODEL.ROI_HEADS.SCORE_THRESH_TEST = %g: the "
            "model outputs no detection scored below %g, so the false alarms at those "
            "thresholds are undercounted (they equal those at %g). Lower "
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST to at most %g, the lowest threshold.",
            ", ".join(f"{t:g}" for t in below),
            score_thresh_test,
            score_thresh_test,
            score_thresh_test,
            thresholds[0],
        )


def _index_images(dataset_name):
    """The negative image ids and the positive images' ground truth of a registered dataset.

    Returns:
        tuple[set, dict]: (negative image ids, positive image id -> GroundTruth).
    """
    negative_ids, truth = set(), {}
    for index, record in enumerate(DatasetCatalog.get(dataset_name)):
        if "image_id" not in record:
            raise ValueError(
                f"Dataset '{dataset_name}', record {index} ({record.get('file_name', '?')}): "
                "field 'image_id' is missing. Give every record a unique image_id: predictions "
                "are matched to images by it."
            )
        if record["image_id"] in negative_ids or record["image_id"] in truth:
            raise ValueError(
                f"Dataset '{dataset_name}', record {index} ({record.get('file_name', '?')}): "
                f"image_id {record['image_id']!r} is used by an earlier record too. Give every "
                "record of a test set its own image_id: predictions are matched to images by it."
            )
        if is_negative_image(record):
            negative_ids.add(record["image_id"])
        else:
            truth[record["image_id"]] = ground_truth(record)
    return negative_ids, truth


def _default_output_dir(cfg, output_dir):
    # Where detectron2's train_net puts its evaluators' files.
    return os.path.join(cfg.OUTPUT_DIR, "inference") if output_dir is None else output_dir


def build_negative_evaluator(cfg, dataset_name, output_dir=None):
    """A NegativeImageEvaluator configured by ``cfg.HNM.EVAL`` and the model's test settings.

    Args:
        cfg (CfgNode): a config with the hnm_d2 keys (``add_hnm_config``).
        dataset_name (str): registered test dataset.
        output_dir (str or None): None means ``<cfg.OUTPUT_DIR>/inference``, where detectron2's
            train_net puts its evaluators' files.

    Returns:
        NegativeImageEvaluator: also told MODEL.ROI_HEADS.SCORE_THRESH_TEST and
        TEST.DETECTIONS_PER_IMAGE, so that it warns where they make it undercount.

    Raises:
        HNMConfigError: HNM.EVAL.SCORE_THRESHOLDS is missing or out of range.
    """
    validate_hnm_config(cfg, prefix="HNM.EVAL")
    return NegativeImageEvaluator(
        dataset_name,
        output_dir=_default_output_dir(cfg, output_dir),
        score_thresholds=cfg.HNM.EVAL.SCORE_THRESHOLDS,
        score_thresh_test=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        recalls=cfg.HNM.EVAL.RECALLS,
        match_iou=cfg.HNM.EVAL.MATCH_IOU,
    )


def build_hnm_evaluator(cfg, dataset_name, output_dir=None):
    """COCO AP on the whole test set beside a NegativeImageEvaluator: what HNMTrainer uses.

    Args:
        cfg (CfgNode): a config with the hnm_d2 keys (``add_hnm_config``).
        dataset_name (str): registered test dataset.
        output_dir (str or None): shared by both evaluators (the positive subset's files go
            to its "positives" subfolder); None means ``<cfg.OUTPUT_DIR>/inference``.

    Returns:
        DatasetEvaluators: its results have "bbox" (COCOEvaluator on the whole set; "segm"
        too with MODEL.MASK_ON),
        "bbox_positives" and "negatives" (see the module docstring).

    Raises:
        HNMConfigError: HNM.EVAL.SCORE_THRESHOLDS is missing or out of range.
    """
    output_dir = _default_output_dir(cfg, output_dir)
    # Built first: a config error surfaces before COCOEvaluator converts the whole dataset.
    negatives = build_negative_evaluator(cfg, dataset_name, output_dir)
    whole_set = COCOEvaluator(dataset_name, tasks=_coco_tasks(cfg), output_dir=output_dir)
    return DatasetEvaluators([whole_set, negatives])


def _coco_tasks(cfg):
    """The COCO tasks the model predicts: boxes, and masks for Mask R-CNN (MODEL.MASK_ON)."""
    return ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
