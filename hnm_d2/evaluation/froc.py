"""FROC plots: recall against false alarms per negative image, one curve per model.

The evaluator writes each evaluation's curve to ``froc.json`` (:func:`save_curve`), so that a
benchmark can draw the curves of several runs on one plot (:func:`plot_froc`).
"""

import json
import math
from typing import Dict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..utils.atomic import write_json_atomically
from .operating_point import DetectionCurve

__all__ = ["save_curve", "load_curve", "plot_froc"]


def save_curve(curve: DetectionCurve, path: str) -> None:
    """Write a curve as strict JSON (arrays as lists, NaN as null), atomically."""
    content = {
        k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in curve._asdict().items()
    }
    write_json_atomically(path, content)


def load_curve(path: str) -> DetectionCurve:
    """Read back a curve written by :func:`save_curve`."""
    with open(path) as f:
        content = json.load(f)
    for key, value in content.items():
        if isinstance(value, list):
            content[key] = np.array([math.nan if x is None else x for x in value], np.float64)
    return DetectionCurve(**content)


def plot_froc(curves: Dict[str, DetectionCurve], path: str, recall_marks=(0.8, 0.9)) -> None:
    """Recall on the positive images against false alarms per negative image (log axis).

    A false-alarm rate of 0 cannot sit on a log axis: it is drawn at half of the smallest
    non-zero rate a curve can have (one alarm on all the negative images), and the axis says so.

    Args:
        curves (dict): label -> DetectionCurve, one line each.
        path (str): the PNG to write.
        recall_marks (Sequence[float]): recall levels drawn as dotted lines.
    """
    # A Figure with its own Agg canvas: no pyplot, no global backend switched for the user.
    figure = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    negatives = [c.num_negative_images for c in curves.values() if c.num_negative_images]
    floor = 0.5 / max(negatives) if negatives else 1e-3
    highest, drawn_any = floor, False
    for label, curve in curves.items():
        drawn = np.isfinite(curve.fa_per_negative_image) & np.isfinite(curve.recall)
        if not drawn.any():  # no negative image or no object: nothing to draw
            continue
        false_alarms = np.maximum(curve.fa_per_negative_image[drawn], floor)
        axes.step(false_alarms, curve.recall[drawn], where="post", label=label)
        highest, drawn_any = max(highest, false_alarms.max()), True
    for recall in recall_marks:
        axes.axhline(recall, linestyle=":", linewidth=0.8, color="grey")
    axes.set_xscale("log")
    axes.set_xlim(floor / 1.5, highest * 1.5)
    axes.set_xlabel(f"false alarms per negative image (0 drawn at {floor:.2g})")
    axes.set_ylabel("recall on positive images (IoU 0.5)")
    axes.set_ylim(0, 1.02)
    axes.grid(True, which="both", linewidth=0.3)
    if drawn_any:
        axes.legend(loc="lower right", fontsize="small")
    axes.set_title("FROC: higher and further left is better")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
