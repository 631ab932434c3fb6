"""What the dataset loaders share: the metadata a registered dataset gets, the log of what a
loaded dataset holds, the check that listed images are on disk, image sizes read from files,
and the image-id base of a dataset name.

Each ``register_*`` function (:mod:`.coco`, :mod:`.voc`, :mod:`.yolo`, :mod:`.negative_folder`)
registers a lazy loader in detectron2's DatasetCatalog, sets the dataset's metadata
(thing_classes, evaluator_type "coco") at once so the model and mapper can be built before the
data is loaded, and returns the name. Each loader is also public as a pure ``load_*`` function
returning ``list[dict]``.

The same up-front checks for every loader: what can be checked without reading every
annotation (the annotation file's shape, the split's folders, the class names, and, for the
loaders whose files list images, that every listed image is on disk) is checked when the
dataset is registered, so a mistake fails there and not when the mapper first reaches it.

A negative image is a dataset dict whose "annotations" list is empty or missing. The loaders
never drop annotations: invalid boxes are counted in a warning here and handled by the
mapper's ``HNM.DATA.INVALID_ANNOTATIONS`` policy. An entry that cannot be read as a box at all
(a malformed COCO entry, an unreadable VOC <bndbox>, a YOLO row that is not five numbers) is an
error naming the file and the field. A listed image that is not on disk is an error, or with
``missing_images="drop"`` left out with a warning (:func:`images_not_on_disk`).

Image ids need only be unique within a dataset (COCOEvaluator matches predictions to images by
them). Across datasets they may repeat, as separate COCO files all number from 1: hnm_d2
identifies an image by its file wherever it needs an identity (the hard-negative buffer, the
mining pool). The loaders number images as follows:

* COCO keeps the ids of its JSON (what COCOEvaluator expects);
* VOC takes the digits of each file id ("BloodImage_00338" -> 338, "2008_000008" ->
  2008000008), the same in every split;
* a folder of negative images, and a YOLO split, number their files in sorted order from
  ``id_offset``, which by default is ``name_id_offset(name)``: a multiple of 10**9 between
  10**9 and 10**15 picked by the dataset name, so that its ids stand apart from COCO's and
  VOC's in logs and reports.
"""

import logging
import os
import zlib
from pathlib import Path
from typing import List, Sequence, Set, Tuple

from detectron2.data import MetadataCatalog
from PIL import Image

from .negative_boxes import log_negative_boxes
from .subsets import is_negative_image
from .validation import annotation_origin, describe_annotation, find_annotation_problem

__all__ = [
    "IMAGE_EXTENSIONS",
    "MISSING_IMAGE_POLICIES",
    "image_size_after_exif",
    "images_not_on_disk",
    "log_composition",
    "name_id_offset",
    "name_some",
    "set_dataset_metadata",
]

logger = logging.getLogger(__name__)

_ID_BLOCK = 10**9
_ID_BLOCKS = 10**6
_INVALID_EXAMPLES_SHOWN = 5
_NAMED_IN_A_MESSAGE = 10

# What a loader does with an image its annotation file lists but the disk lacks: the words of
# HNM.DATA.INVALID_ANNOTATIONS, applied when the dataset is registered and loaded.
MISSING_IMAGE_POLICIES = ("error", "drop")

# The image files the loaders that list a folder (negative folders, YOLO) take; others are
# skipped with a warning that counts and names them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# EXIF orientations that rotate by 90 or 270 degrees: detectron2's read_image applies them,
# so the decoded image has width and height swapped relative to the file header.
_TRANSPOSING_EXIF_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112


def name_id_offset(name: str) -> int:
    """A stable image-id base for a dataset name: a multiple of 10**9 in [10**9, 10**15].

    Stable across runs and machines (CRC32, not Python's salted hash), and below 2**53 so ids
    stay exact in float64 and JSON tools.
    """
    return _ID_BLOCK * (1 + zlib.crc32(name.encode("utf-8")) % _ID_BLOCKS)


def image_size_after_exif(path: Path) -> Tuple[int, int]:
    """(height, width) of an image as detectron2's read_image will decode it; header only.

    Raises:
        ValueError: the file cannot be read as an image.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except OSError as err:
        raise ValueError(
            f"Cannot read image {path} ({err}): fix the file, or remove it from the dataset."
        ) from err
    if orientation in _TRANSPOSING_EXIF_ORIENTATIONS:
        return width, height
    return height, width


def images_not_on_disk(
    source: str, file_names: Sequence[str], policy: str, image_folder: str
) -> Set[str]:
    """The listed image files that are not on disk, under the missing-image policy.

    Checked when a dataset is registered and when it is loaded: otherwise a missing image
    registers fine and fails only when the mapper reaches it, mid training or mid evaluation.

    Args:
        source: the dataset as messages name it, e.g. "COCO data/train.json".
        file_names: the path of every image the dataset lists.
        policy: "error" raises when any image is missing; "drop" warns, counting and naming
            them, and the caller leaves them out. Both raise when every image is missing.
        image_folder: what to check when files are missing, e.g. "IMAGE_ROOT data/images".

    Returns:
        The paths of the missing images, for the caller to leave out (empty when none).

    Raises:
        ValueError: an image is missing and the policy is "error", every image is missing,
            or the policy is unknown.
    """
    if policy not in MISSING_IMAGE_POLICIES:
        raise ValueError(
            f"{source}: missing_images={policy!r}; allowed are {MISSING_IMAGE_POLICIES}."
        )
    missing = [f for f in file_names if not os.path.isfile(f)]
    if not missing:
        return set()
    counted = (
        f"{source}: {len(missing)} of its {len(file_names)} images are not on disk: "
        f"{name_some(missing)}."
    )
    if len(missing) == len(file_names):
        raise ValueError(f"{counted} Check {image_folder}: it holds none of them.")
    if policy == "error":
        raise ValueError(
            f"{counted} Restore them, check {image_folder}, or leave them out with "
            "missing_images='drop' (flag --missing-images drop)."
        )
    logger.warning(f"{counted} Left out (missing_images is drop).")
    return set(missing)


def name_some(items: Sequence[str]) -> str:
    """The first items, comma-separated, and how many more: for warnings that count and name
    what was skipped without flooding the log when it is thousands."""
    more = len(items) - _NAMED_IN_A_MESSAGE
    return ", ".join(map(str, items[:_NAMED_IN_A_MESSAGE])) + (
        f" and {more} more" if more > 0 else ""
    )


def set_dataset_metadata(name: str, thing_classes: Sequence[str], **extra) -> None:
    """Set the metadata of a dataset at registration: its class names, evaluator_type "coco"
    (COCOEvaluator) and ``extra`` (json_file, image_root, ...)."""
    MetadataCatalog.get(name).set(thing_classes=list(thing_classes), evaluator_type="coco", **extra)


def log_composition(source: str, dataset_dicts: List[dict], num_classes: int) -> None:
    """Log the positive/negative split and the negative boxes, and warn about annotations
    the mapper will reject."""
    num_negative = sum(is_negative_image(d) for d in dataset_dicts)
    logger.info(
        f"{source}: {len(dataset_dicts)} images, {len(dataset_dicts) - num_negative} positive, "
        f"{num_negative} negative."
    )
    log_negative_boxes(source, dataset_dicts)
    problems = _describe_invalid_annotations(dataset_dicts, num_classes)
    if problems:
        shown = "; ".join(problems[:_INVALID_EXAMPLES_SHOWN])
        logger.warning(
            f"{source}: {len(problems)} invalid annotations, kept for the mapper's "
            f"HNM.DATA.INVALID_ANNOTATIONS policy (error or drop). First ones: {shown}"
        )


def _describe_invalid_annotations(dataset_dicts: List[dict], num_classes: int) -> List[str]:
    descriptions = []
    for d in dataset_dicts:
        for index, obj in enumerate(d["annotations"]):
            reason = find_annotation_problem(obj, d["height"], d["width"], num_classes)
            if reason is not None:
                origin = annotation_origin(obj)
                descriptions.append(
                    describe_annotation(d["file_name"], d["image_id"], index, reason, origin)
                )
    return descriptions
