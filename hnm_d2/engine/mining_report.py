"""What the mining loop writes for people to read: JSON files and matplotlib plots (PNG).

Every file is written atomically (:mod:`hnm_d2.utils.atomic`), so a reader (or a resumed run)
sees the previous complete file or the new one, never half of one.
Plots are drawn on matplotlib's Agg canvas directly: no pyplot, no global backend switch.
"""

import math
import os

import torch
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes, Instances
from detectron2.utils.visualizer import Visualizer
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..utils.atomic import atomic_open

__all__ = [
    "added_images_entry",
    "round_metrics",
    "build_report",
    "plot_curves",
    "plot_mined_images",
]

# The mined-image grid shows at most this many images (the hardest first): enough to see what
# the detector confuses with objects, small enough to stay legible.
MAX_IMAGES_DRAWN = 16
TILE_PIXELS = 384  # longer side of each drawn image


def _metrics_by_threshold(negatives, prefix):
    # "fa_per_image@0.5" -> {"0.5": value}; not the recall-matched "fa_per_image@recall0.9".
    return {
        k.split("@", 1)[1]: v
        for k, v in negatives.items()
        if k.startswith(prefix + "@") and not k.startswith(prefix + "@recall")
    }


def _metrics_by_recall(negatives):
    # "fa_per_image@recall0.9" -> {"0.9": value}
    prefix = "fa_per_image@recall"
    return {k[len(prefix) :]: v for k, v in negatives.items() if k.startswith(prefix)}


def round_metrics(eval_results):
    """The figures the report follows across rounds, per test set.

    Args:
        eval_results (dict): test dataset name -> NegativeImageEvaluator results.

    Returns:
        dict: test dataset name -> {"AP", "AP50" (COCO AP on the positive images, None when
        not computed), "fa_per_image" and "images_with_fa" (threshold -> value, on the
        negative images), "fa_at_recall" (recall level -> false alarms per negative image at
        the threshold that reaches it) and "log_avg_miss_rate"}.
    """
    metrics = {}
    for dataset_name, results in eval_results.items():
        positives = results.get("bbox_positives", {})
        negatives = results.get("negatives", {})
        metrics[dataset_name] = {
            "AP": positives.get("AP"),
            "AP50": positives.get("AP50"),
            "fa_per_image": _metrics_by_threshold(negatives, "fa_per_image"),
            "images_with_fa": _metrics_by_threshold(negatives, "images_with_fa"),
            "fa_at_recall": _metrics_by_recall(negatives),
            "log_avg_miss_rate": negatives.get("log_avg_miss_rate"),
        }
    return metrics


def _as_train_net_results(eval_results):
    # DefaultTrainer.test, hence results.json, gives a lone test set's results unwrapped.
    if len(eval_results) == 1:
        return next(iter(eval_results.values()))
    return eval_results


def added_images_entry(images, pool_size_after, negative_boxes):
    """What a report says of the images a round or an online step added; one shape for both.

    Args:
        images (list[dict]): the images added, hardest first, each with its "file_name" and
            "score".
        pool_size_after (int): the images left in the pool after they were taken.
        negative_boxes (dict): file_name -> the boxes a person judged false alarms, which the
            image trains with as background (:class:`hnm_d2.engine.verdicts.ObeyedVerdicts`).

    Returns:
        dict: "images_added", "pool_size_after", "scores" and "false_alarm_boxes" (how many
        boxes judged false alarms these images train with now).
    """
    return {
        "images_added": len(images),
        "pool_size_after": pool_size_after,
        "scores": [image["score"] for image in images],
        "false_alarm_boxes": sum(len(negative_boxes.get(i["file_name"], ())) for i in images),
    }


def build_report(
    round_summaries,
    pool,
    rounds_requested,
    stop_reason=None,
    verdicts=None,
    negative_boxes=None,
    selection="hardest",
):
    """The content of report.json.

    Args:
        round_summaries (list[dict]): the round_K.json contents of the rounds done, in order.
        pool (Sequence[str]): the pool's dataset names.
        rounds_requested (int): mining rounds asked for (round 0 not counted).
        stop_reason (str or None): why mining ended before ``rounds_requested``.
        verdicts (dict or None): what the verdicts obeyed moved
            (:meth:`hnm_d2.engine.verdicts.ObeyedVerdicts.report_entry`).
        negative_boxes (dict or None): file_name -> its boxes judged false alarms, for
            :func:`added_images_entry`.
        selection (str): HNM.MINING.SELECTION, how the rounds chose their images.

    Returns:
        dict: "pool", "selection", "rounds_requested", "rounds_done", "stop_reason", "verdicts"
        and "rounds":
        per round "round", the images it added (:func:`added_images_entry`), "train_size",
        "training_dir", "metrics" (see :func:`round_metrics`) and "results": the evaluator's
        results in the shape train_net.py writes to results.json (a lone test set's dict
        itself, else one dict per test set), so scripts can compare a mining run with a stock
        one.
    """
    return {
        "pool": list(pool),
        "selection": selection,
        "rounds_requested": rounds_requested,
        "rounds_done": len(round_summaries) - 1,
        "stop_reason": stop_reason,
        "verdicts": verdicts,
        "rounds": [
            {
                "round": s["round"],
                **added_images_entry(s["added"], s["pool_size_after"], negative_boxes or {}),
                "train_size": s["train_size"],
                "training_dir": s["training_dir"],
                "metrics": round_metrics(s["eval"]),
                "results": _as_train_net_results(s["eval"]),
            }
            for s in round_summaries
        ],
    }


def _series(report, dataset_name, key, threshold=None):
    """Per round, a test set's ``metrics[key]`` (or ``metrics[key][threshold]``); NaN (a gap in
    the plot) where a round lacks it."""
    values = []
    for r in report["rounds"]:
        value = r["metrics"].get(dataset_name, {}).get(key)
        if threshold is not None and value is not None:
            value = value.get(threshold)
        values.append(float("nan") if value is None else value)
    return values


def _levels(report, dataset_name, key):
    """The score thresholds or recall levels of a test set's ``metrics[key]``, increasing."""
    found = set()
    for r in report["rounds"]:
        found.update(r["metrics"].get(dataset_name, {}).get(key) or {})
    return sorted(found, key=float)


def _save_figure(figure, path):
    FigureCanvasAgg(figure)
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=100)


def plot_curves(report, path):
    """Plot AP on positive images, and false alarms per negative image at score thresholds and
    at matched recall, against the round.

    Args:
        report (dict): :func:`build_report` output.
        path (str): the PNG file to write.
    """
    rounds = [r["round"] for r in report["rounds"]]
    figure = Figure(figsize=(15, 4.5), layout="constrained")
    ap_axes, fa_axes, recall_axes = figure.subplots(1, 3)
    for name in sorted({name for r in report["rounds"] for name in r["metrics"]}):
        for key in ("AP", "AP50"):
            ap_axes.plot(rounds, _series(report, name, key), "o-", label=f"{key} {name}")
        for t in _levels(report, name, "fa_per_image"):
            values = _series(report, name, "fa_per_image", t)
            fa_axes.plot(rounds, values, "o-", label=f"score >= {t} {name}")
        for r in _levels(report, name, "fa_at_recall"):
            values = _series(report, name, "fa_at_recall", r)
            recall_axes.plot(rounds, values, "o-", label=f"recall {r} {name}")
    ap_axes.set(title="COCO AP on positive test images", xlabel="round", ylabel="AP")
    fa_axes.set(
        title="False alarms per negative test image", xlabel="round", ylabel="detections / image"
    )
    recall_axes.set(
        title="... at matched recall (gap: not reached)",
        xlabel="round",
        ylabel="detections / image",
    )
    for axes in (ap_axes, fa_axes, recall_axes):
        axes.set_xticks(rounds)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=8)
    _save_figure(figure, path)


def plot_online_curves(report, path):
    """Online mining: images added and pool size, and the mined images' scores, per step.

    Args:
        report (dict): the online report (:func:`hnm_d2.engine.online_mining.run_online_mining`).
        path (str): the PNG file to write.
    """
    steps = report["steps"]
    iterations = [s["iteration"] for s in steps]
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    count_axes, score_axes = figure.subplots(1, 2)
    count_axes.plot(iterations, [s["images_added"] for s in steps], "o-", label="images added")
    count_axes.plot(iterations, [s["pool_size_after"] for s in steps], "o-", label="left in pool")
    count_axes.set(title="Online mining steps", xlabel="iteration", ylabel="images")
    for label, pick in (("highest", max), ("lowest", min)):
        values = [pick(s["scores"]) if s["scores"] else float("nan") for s in steps]
        score_axes.plot(iterations, values, "o-", label=f"{label} score of the mined images")
    score_axes.set(
        title="How hard the mined images are (their top detection score)",
        xlabel="iteration",
        ylabel="score",
    )
    for axes in (count_axes, score_axes):
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=8)
    _save_figure(figure, path)


def _drawn_detections(image, detections, metadata):
    """The image (H, W, 3 RGB) with its detections drawn by detectron2's Visualizer."""
    instances = Instances(
        image.shape[:2],
        pred_boxes=Boxes(torch.tensor(detections["boxes"], dtype=torch.float32).reshape(-1, 4)),
        scores=torch.tensor(detections["scores"], dtype=torch.float32),
        pred_classes=torch.tensor(detections["classes"], dtype=torch.int64),
    )
    # Every tile is drawn at the same size, so the labels are legible whatever the image size.
    scale = TILE_PIXELS / max(image.shape[:2])
    visualizer = Visualizer(image, metadata, scale=scale)
    return visualizer.draw_instance_predictions(instances).get_image()


def plot_mined_images(images, metadata, path, title):
    """A grid of mined images, hardest first, each with the detections that got it chosen.

    Args:
        images (list[dict]): selection entries with "file_name", "score" and "detections"
            ("boxes" XYXY_ABS, "scores", "classes"), hardest first; the first
            ``MAX_IMAGES_DRAWN`` are drawn.
        metadata (Metadata): for the class names on the labels.
        path (str): the PNG file to write.
        title (str): the figure's title; how many images are shown is appended.
    """
    shown = images[:MAX_IMAGES_DRAWN]
    columns = math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(3.2 * columns, 3.4 * rows + 0.4), layout="constrained")
    figure.suptitle(f"{title}\n{len(shown)} of {len(images)} shown, hardest first", fontsize=10)
    for index, entry in enumerate(shown):
        axes = figure.add_subplot(rows, columns, index + 1)
        image = read_image(entry["file_name"], format="RGB")
        axes.imshow(_drawn_detections(image, entry["detections"], metadata))
        axes.set_title(
            f"{os.path.basename(entry['file_name'])}\nmax score {entry['score']:.3f}", fontsize=8
        )
        axes.axis("off")
    _save_figure(figure, path)
