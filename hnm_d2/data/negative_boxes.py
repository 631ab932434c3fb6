"""Negative boxes: "this looks like an object, and is not". The contract between whatever marks
them (a dataset's own annotations, a person's verdict on a mined detection) and the model.

The dataset-dict field (optional; a dict without it has no negative boxes)::

    "negative_boxes": [[x0, y0, x1, y1], ...]

a list of boxes in XYXY_ABS pixels of the image file as detectron2 decodes it (after EXIF
orientation): the frame of the dict's "annotations" and of its "height" and "width". Producers:

* the loaders, with ``negative_box_category`` (flag ``--negative-box-category NAME``): the
  boxes of that category of a COCO file, a VOC split or a YOLO split, which is then no class
  of the dataset (not in thing_classes, no contiguous id); every record of the dataset gets
  the field, empty where the image has none;
* mining, from a person's "false alarm" verdict on a detection.

:class:`~hnm_d2.data.NegativeAwareDatasetMapper` validates them as it validates annotations
(``HNM.DATA.INVALID_ANNOTATIONS``), applies the image's transforms, leaves out those the
augmentation cropped away, and in training outputs :class:`~detectron2.structures.Boxes`
(N, 4) under the same key, in the coordinates of the model's input image. HNMRCNN with
HNMROIHeads (or HNMCascadeROIHeads) trains each of them as a background RoI every time its
image is seen (:mod:`hnm_d2.modeling.roi_heads_buffer`). A stock model ignores the field, as
detectron2 ignores keypoints with MODEL.KEYPOINT_ON off, so a stock baseline trains on the
same registered data.

Negative boxes are not annotations: an image whose "annotations" are empty is a negative
image (:func:`~hnm_d2.data.is_negative_image`), whatever negative boxes it has.
"""

import logging
from typing import List, Sequence

__all__ = ["NEGATIVE_BOXES", "check_negative_box_category", "log_negative_boxes"]

logger = logging.getLogger(__name__)

NEGATIVE_BOXES = "negative_boxes"


def check_negative_box_category(
    source: str, category: str, categories: Sequence[str], classes: Sequence[str]
) -> None:
    """Refuse a negative-box category that the dataset does not have, that is also one of the
    classes to learn, or that leaves no class.

    Args:
        source: the file (or split) the categories come from, as messages name it.
        category: the ``negative_box_category`` asked for.
        categories: the category (class) names the source has.
        classes: the classes the model will learn (the chosen ones, or all the others).

    Raises:
        ValueError: naming the source, the categories found and the fix.
    """
    if category not in categories:
        raise ValueError(
            f"{source}: negative_box_category {category!r} is not one of its categories "
            f"{sorted(set(categories))}. Check the spelling (names are case-sensitive), or "
            "leave out --negative-box-category (negative_box_category=None)."
        )
    if category in classes:
        raise ValueError(
            f"{source}: {category!r} is both a chosen class {list(classes)} and the "
            "negative_box_category: a box cannot be an object and not one. Remove it from "
            "the classes."
        )
    if not classes:
        raise ValueError(
            f"{source}: {category!r} is its only category, and the negative_box_category is "
            "no class: the model would have none to detect. Add the object categories."
        )


def log_negative_boxes(source: str, dataset_dicts: List[dict]) -> None:
    """Log how many negative boxes a loaded dataset holds, when its records carry them."""
    counts = [len(d[NEGATIVE_BOXES]) for d in dataset_dicts if NEGATIVE_BOXES in d]
    if counts:
        logger.info(
            f"{source}: {sum(counts)} negative boxes on {sum(n > 0 for n in counts)} images."
        )
