"""What the dataset loaders share: the metadata a registered dataset gets, the log of what a
loaded dataset holds, and the image-id base of a dataset name.

Each ``register_*`` function (:mod:`.coco`, :mod:`.voc`, :mod:`.negative_folder`) registers a
lazy loader in detectron2's DatasetCatalog, sets the dataset's metadata (thing_classes,
evaluator_type "coco") at once so the model and mapper can be built before the data is loaded,
and returns the name. Each loader is also public as a pure ``load_*`` function returning
``list[dict]``.

A negative image is a dataset dict whose "annotations" list is empty or missing. The loaders
never drop annotations: invalid boxes are counted in a warning here and handled by the
mapper's ``HNM.DATA.INVALID_ANNOTATIONS`` policy.

Image ids need only be unique within a dataset (COCOEvaluator matches predictions to images by
them). Across datasets they may repeat, as separate COCO files all number from 1: hnm_d2
identifies an image by its file wherever it needs an identity (the hard-negative buffer, the
mining pool). The loaders number images as follows:

* COCO keeps the ids of its JSON (what COCOEvaluator expects);
* VOC takes the digits of each file id ("BloodImage_00338" -> 338, "2008_000008" ->
  2008000008), the same in every split;
* a folder of negative images numbers its files in sorted order from ``id_offset``, which by
  default is ``name_id_offset(name)``: a multiple of 10**9 between 10**9 and 10**15 picked by
  the dataset name, so that its ids stand apart from COCO's and VOC's in logs and reports.
"""

import logging
import zlib
from pathlib import Path
from typing import List, Sequence, Tuple

from detectron2.data import MetadataCatalog
from PIL import Image

from .subsets import is_negative_image
from .validation import annotation_origin, describe_annotation, find_annotation_problem

__all__ = [
    "IMAGE_EXTENSIONS",
    "image_size_after_exif",
    "log_composition",
    "name_id_offset",
    "set_dataset_metadata",
]

logger = logging.getLogger(__name__)

_ID_BLOCK = 10**9
_ID_BLOCKS = 10**6
_INVALID_EXAMPLES_SHOWN = 5

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


def set_dataset_metadata(name: str, thing_classes: Sequence[str], **extra) -> None:
    """Set the metadata of a dataset at registration: its class names, evaluator_type "coco"
    (COCOEvaluator) and ``extra`` (json_file, image_root, ...)."""
    MetadataCatalog.get(name).set(thing_classes=list(thing_classes), evaluator_type="coco", **extra)


def log_composition(source: str, dataset_dicts: List[dict], num_classes: int) -> None:
    """Log the positive/negative split and warn about annotations the mapper will reject."""
    num_negative = sum(is_negative_image(d) for d in dataset_dicts)
    logger.info(
        f"{source}: {len(dataset_dicts)} images, {len(dataset_dicts) - num_negative} positive, "
        f"{num_negative} negative."
    )
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
