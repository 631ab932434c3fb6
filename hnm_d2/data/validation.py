"""Checks of one annotation (detectron2 dataset format) against its image and the class list.

The checks are pure functions: they return a reason string, or None for a valid annotation, so
the mapper decides what happens next (raise or drop, by ``HNM.DATA.INVALID_ANNOTATIONS``) and
the dataset loaders can report problems early without acting on them.

A box is degenerate when its area is zero or negative, or at most ``MAX_DEGENERATE_AREA_PX``
(one pixel). The second rule exists for Pascal VOC: its coordinates are inclusive 1-based pixel
indices, so a box whose corners coincide (xmin == xmax, ymin == ymax, an annotator's single
click) becomes a 1 x 1 px box once converted like detectron2's ``load_voc_instances``, not a
zero-area one; no detector can learn an object from one pixel. Thin boxes (1 x 20 px) pass.

Box bounds allow ``BOUNDARY_TOLERANCE_PX`` pixels beyond the image border. Pascal VOC stores
1-based inclusive pixel indices; converted like detectron2's ``load_voc_instances`` a box that
touches the right border ends exactly at the width, but hand-made VOC files often end at
width + 1 (an inclusive index taken as exclusive). Such boxes are harmless because detectron2
clips every box to the image when it transforms it; anything further out means the box belongs
to another image size or coordinate frame, and is reported.

A loader whose annotation files have lines (YOLO's label files) says where an annotation came
from under the annotation's ``"origin"`` key, e.g. "labels/train/a.txt line 3 '0 0.5 0.5 0 0.1'";
every description of an invalid annotation names it, so the message leads to the line to fix.
"""

import numbers
from typing import Optional

import numpy as np
from detectron2.structures import BoxMode

__all__ = [
    "BOUNDARY_TOLERANCE_PX",
    "InvalidAnnotationError",
    "MAX_DEGENERATE_AREA_PX",
    "annotation_origin",
    "describe_annotation",
    "find_annotation_problem",
    "find_negative_box_problem",
]

BOUNDARY_TOLERANCE_PX = 1.0
MAX_DEGENERATE_AREA_PX = 1.0

# Box modes the detection mapper can convert to XYXY_ABS, with their number of values.
_SUPPORTED_BOX_MODES = {BoxMode.XYXY_ABS: 4, BoxMode.XYWH_ABS: 4, BoxMode.XYWHA_ABS: 5}


class InvalidAnnotationError(ValueError):
    """An annotation that fails validation while HNM.DATA.INVALID_ANNOTATIONS is "error".

    The constructor takes only the message, like ValueError: PyTorch's DataLoader re-raises a
    worker's exception in the main process by calling its type with the message alone.
    """


def describe_annotation(
    file_name: str,
    image_id,
    index: int,
    reason: str,
    origin: Optional[str] = None,
    kind: str = "annotation",
) -> str:
    """One line naming an annotation and its problem, for errors and warnings alike.

    Args:
        file_name: the image file the annotation belongs to.
        image_id: the dataset dict's "image_id".
        index: position of the annotation in the dataset dict's "annotations" list.
        reason: what is wrong, as returned by :func:`find_annotation_problem`.
        origin: where in an annotation file it came from (:func:`annotation_origin`), if known.
        kind: what is described: "annotation", or "negative_boxes entry" (index in that list).
    """
    where = f"; from {origin}" if origin else ""
    return f"{kind} #{index} of image id {image_id!r} ({file_name}{where}): {reason}"


def annotation_origin(annotation) -> Optional[str]:
    """The annotation's "origin" (the line of an annotation file it came from), or None."""
    return annotation.get("origin") if isinstance(annotation, dict) else None


def find_annotation_problem(
    annotation: dict, image_height: int, image_width: int, num_classes: int
) -> Optional[str]:
    """Why an annotation is unusable for training, or None if it is valid.

    Checked in this order: the annotation is a dict; the category id lies in [0, num_classes);
    "bbox" and "bbox_mode" exist and the mode is absolute; every coordinate is finite; the box
    has positive width and height once converted to XYXY_ABS, and covers more than one pixel;
    the box lies inside the image, up to ``BOUNDARY_TOLERANCE_PX``.

    Args:
        annotation: one element of a dataset dict's "annotations" list.
        image_height: height in pixels of the image the box refers to (before transforms).
        image_width: width in pixels of that image.
        num_classes: number of thing classes; valid category ids are 0 .. num_classes - 1.

    Returns:
        A reason naming the field and its values, or None.
    """
    if not isinstance(annotation, dict):
        return f"annotation {annotation!r} is a {type(annotation).__name__}, not a dict"
    return _category_problem(annotation, num_classes) or _box_problem(
        annotation, image_height, image_width
    )


def find_negative_box_problem(box, image_height: int, image_width: int) -> Optional[str]:
    """Why a negative box ([x0, y0, x1, y1] in XYXY_ABS, :mod:`.negative_boxes`) is unusable, or
    None: the box checks of :func:`find_annotation_problem`, which it must pass to be trained as
    background at the place it marks."""
    return _box_problem({"bbox": box, "bbox_mode": BoxMode.XYXY_ABS}, image_height, image_width)


def _category_problem(annotation: dict, num_classes: int) -> Optional[str]:
    if "category_id" not in annotation:
        return "category_id is missing"
    category_id = annotation["category_id"]
    if not isinstance(category_id, numbers.Integral) or isinstance(category_id, bool):
        return f"category_id {category_id!r} is not an integer"
    if not 0 <= category_id < num_classes:
        return (
            f"category_id {category_id} is outside [0, {num_classes}), the contiguous ids of "
            f"the {num_classes} thing classes"
        )
    return None


def _box_problem(annotation: dict, image_height: int, image_width: int) -> Optional[str]:
    for field in ("bbox", "bbox_mode"):
        if field not in annotation:
            return f"{field} is missing"
    try:
        mode = BoxMode(annotation["bbox_mode"])
    except ValueError:
        return f"bbox_mode {annotation['bbox_mode']!r} is not a BoxMode"
    if mode not in _SUPPORTED_BOX_MODES:
        return f"bbox_mode {mode.name} is relative: use XYXY_ABS, XYWH_ABS or XYWHA_ABS"
    try:
        values = np.asarray(annotation["bbox"], dtype=np.float64)
    except (TypeError, ValueError):
        return f"bbox {annotation['bbox']!r} is not a list of numbers"
    expected_length = _SUPPORTED_BOX_MODES[mode]
    if values.shape != (expected_length,):
        return f"bbox {annotation['bbox']!r} is not {expected_length} numbers as {mode.name} needs"
    if not np.isfinite(values).all():
        return f"bbox {values.tolist()} contains NaN or inf"
    return _extent_problem(values, mode, image_height, image_width)


def _extent_problem(
    values: np.ndarray, mode: BoxMode, image_height: int, image_width: int
) -> Optional[str]:
    x0, y0, x1, y1 = BoxMode.convert(values[None, :], mode, BoxMode.XYXY_ABS)[0].tolist()
    width, height = x1 - x0, y1 - y0
    if width <= 0 or height <= 0:
        return (
            f"bbox {values.tolist()} ({mode.name}) has zero or negative area: "
            f"width {width:g}, height {height:g} in XYXY_ABS"
        )
    if width * height <= MAX_DEGENERATE_AREA_PX:
        return (
            f"bbox {values.tolist()} ({mode.name}) covers at most one pixel ({width:g} x "
            f"{height:g} px): its corners coincide, as in a Pascal VOC box with xmin == xmax "
            "and ymin == ymax, so it marks no object"
        )
    tolerance = BOUNDARY_TOLERANCE_PX
    inside = (
        x0 >= -tolerance
        and y0 >= -tolerance
        and x1 <= image_width + tolerance
        and y1 <= image_height + tolerance
    )
    if not inside:
        return (
            f"bbox {[x0, y0, x1, y1]} (XYXY_ABS) extends more than {tolerance:g} px outside "
            f"the {image_width}x{image_height} (width x height) image"
        )
    return None
