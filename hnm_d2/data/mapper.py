"""``NegativeAwareDatasetMapper``: detectron2's DatasetMapper for data with negative images.

Differences from the stock mapper, all in training only except the first:

* an image file that is missing or cannot be decoded raises :class:`ImageReadError` naming the
  path and the image id (the stock mapper's error names neither the id nor the fix);
* a negative image (no "annotations" key, or an empty list) always yields "instances" with
  zero boxes, so the model sees it as all background instead of skipping the loss;
* every annotation is validated against the image size and the class count before any
  transform, and an invalid one raises or is dropped by ``HNM.DATA.INVALID_ANNOTATIONS``;
* the output keeps the applied ``TransformList`` under "transforms", which the hard-negative
  buffer uses to map boxes between a re-visit of an image and its original coordinates;
* a dict's "negative_boxes" (the contract: :mod:`.negative_boxes`) are validated like the
  annotations, transformed like them, and output as ``Boxes``; a dict without the field is
  mapped as before.

The image is read once, by the stock ``__call__``; the extensions hook into
``_transform_annotations``, which the stock mapper calls in training with the annotations still
in original image coordinates and the transforms already chosen.
"""

import logging
from typing import List, Optional

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage

from ..compat import has_event_storage
from ..config import validate_hnm_config
from ..key_check import check_hnm_keys_are_used
from .negative_boxes import NEGATIVE_BOXES
from .validation import (
    InvalidAnnotationError,
    annotation_origin,
    describe_annotation,
    find_annotation_problem,
    find_negative_box_problem,
)

__all__ = ["ImageReadError", "NegativeAwareDatasetMapper", "INVALID_ANNOTATION_POLICIES"]

logger = logging.getLogger(__name__)

INVALID_ANNOTATION_POLICIES = ("error", "drop")
DROPPED_ANNOTATIONS_SCALAR = "hnm/data/dropped_annotations"


class ImageReadError(OSError):
    """An image file of a dataset dict that is missing or cannot be decoded."""


class NegativeAwareDatasetMapper(DatasetMapper):
    """DatasetMapper that trains on negative images and validates annotations.

    Output in training, beyond the stock keys: "instances" always present (gt_boxes: Boxes of
    shape (N, 4) float32, gt_classes: int64 tensor of shape (N,), N = 0 on a negative image),
    "transforms" (the ``TransformList`` applied to the image) and, when the dict has
    "negative_boxes", those boxes as Boxes (M, 4) float32 in the output image's coordinates.
    At test time the output is the stock mapper's.

    Attributes:
        num_dropped_annotations (int): annotations and negative boxes dropped so far by this
            mapper object. Each DataLoader worker holds its own copy, so with workers this
            counts per worker.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        invalid_annotation_policy: str = "error",
        num_classes: Optional[int] = None,
        **kwargs,
    ):
        """
        Args:
            is_train: whether the mapper is used in training or inference.
            invalid_annotation_policy: "error" raises InvalidAnnotationError on the first
                invalid annotation; "drop" drops it with a warning and counts it.
            num_classes: number of thing classes; category ids must lie in [0, num_classes).
                Required in training.
            kwargs: the arguments of detectron2's DatasetMapper (augmentations, image_format,
                ...).
        """
        if invalid_annotation_policy not in INVALID_ANNOTATION_POLICIES:
            raise ValueError(
                f"invalid_annotation_policy={invalid_annotation_policy!r}: allowed are "
                f"{INVALID_ANNOTATION_POLICIES} (config key HNM.DATA.INVALID_ANNOTATIONS)."
            )
        if is_train and num_classes is None:
            raise ValueError(
                "NegativeAwareDatasetMapper needs num_classes in training, to check category "
                "ids: pass num_classes=, or build it from a cfg."
            )
        super().__init__(is_train, **kwargs)
        self.invalid_annotation_policy = invalid_annotation_policy
        self.num_classes = num_classes
        self.num_dropped_annotations = 0

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        validate_hnm_config(cfg, prefix="HNM.DATA")
        if is_train:
            check_hnm_keys_are_used(cfg)
        ret = super().from_config(cfg, is_train)
        ret["invalid_annotation_policy"] = cfg.HNM.DATA.INVALID_ANNOTATIONS
        ret["num_classes"] = _num_classes_of_training_data(cfg)
        return ret

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one dataset dict; see the class docstring for the output.

        Raises:
            ImageReadError: the image file is missing or cannot be decoded.
            InvalidAnnotationError: in training, an annotation is invalid and the policy is
                "error".
        """
        if self.is_train and not dataset_dict.get("annotations"):
            # The stock mapper builds "instances" only when the key exists; an explicit empty
            # list makes it build zero-box instances under every augmentation.
            dataset_dict = {**dataset_dict, "annotations": []}
        try:
            return super().__call__(dataset_dict)
        except SizeMismatchError as err:
            raise SizeMismatchError(f"Image id {dataset_dict.get('image_id')!r}: {err}") from err
        except OSError as err:
            # Only the image reads in the stock __call__ touch the file system.
            path = getattr(err, "filename", None) or dataset_dict.get("file_name")
            raise ImageReadError(
                f"Cannot read image {path} (image id {dataset_dict.get('image_id')!r}): "
                f"{err}. Fix or restore the file, or remove this image from the dataset."
            ) from err

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        # The stock mapper has already filled in height/width from the image when the dict
        # lacked them, so the boxes are checked against the size they were annotated on.
        dataset_dict["annotations"] = self._valid_annotations(dataset_dict)
        if NEGATIVE_BOXES in dataset_dict:
            dataset_dict[NEGATIVE_BOXES] = self._negative_boxes(
                dataset_dict, transforms, image_shape
            )
        dataset_dict["transforms"] = transforms
        super()._transform_annotations(dataset_dict, transforms, image_shape)

    def _valid_annotations(self, dataset_dict: dict) -> List[dict]:
        """The annotations that pass validation; applies the policy to the others."""
        valid = []
        for index, annotation in enumerate(dataset_dict["annotations"]):
            reason = find_annotation_problem(
                annotation, dataset_dict["height"], dataset_dict["width"], self.num_classes
            )
            if reason is None:
                valid.append(annotation)
                continue
            description = describe_annotation(
                dataset_dict.get("file_name"),
                dataset_dict.get("image_id"),
                index,
                reason,
                annotation_origin(annotation),
            )
            self._reject(description, "annotation")
        return valid

    def _negative_boxes(self, dataset_dict: dict, transforms, image_shape) -> Boxes:
        """The valid negative boxes, transformed as the annotations are; a box that the
        augmentation cropped away (empty once clipped to the output image) is left out."""
        valid = self._valid_negative_boxes(dataset_dict)
        if not valid:
            return Boxes(torch.zeros((0, 4), dtype=torch.float32))
        boxes = Boxes(
            torch.as_tensor(
                transforms.apply_box(np.asarray(valid, dtype=np.float64)), dtype=torch.float32
            )
        )
        boxes.clip(image_shape)
        return boxes[boxes.nonempty()]

    def _valid_negative_boxes(self, dataset_dict: dict) -> List[list]:
        """The negative boxes that pass the annotations' box checks; applies the policy to the
        others."""
        boxes = dataset_dict[NEGATIVE_BOXES]
        file_name, image_id = dataset_dict.get("file_name"), dataset_dict.get("image_id")
        if not isinstance(boxes, (list, tuple)):
            raise InvalidAnnotationError(
                f"Image id {image_id!r} ({file_name}): {NEGATIVE_BOXES!r} is a "
                f"{type(boxes).__name__}; it must be a list of [x0, y0, x1, y1] boxes in "
                "XYXY_ABS pixels of the image (see hnm_d2.data.negative_boxes). Fix the code "
                "that wrote it."
            )
        valid = []
        for index, box in enumerate(boxes):
            reason = find_negative_box_problem(box, dataset_dict["height"], dataset_dict["width"])
            if reason is None:
                valid.append(box)
                continue
            description = describe_annotation(
                file_name, image_id, index, reason, kind=f"{NEGATIVE_BOXES} entry"
            )
            self._reject(description, "negative box")
        return valid

    def _reject(self, description: str, what: str) -> None:
        """Apply the policy to an invalid annotation or negative box: raise, or count the drop."""
        if self.invalid_annotation_policy == "error":
            raise InvalidAnnotationError(
                f"Invalid {description}. Fix the {what} in the dataset, or set "
                "HNM.DATA.INVALID_ANNOTATIONS drop to train without it."
            )
        self._record_drop(description)

    def _record_drop(self, description: str) -> None:
        self.num_dropped_annotations += 1
        logger.warning(
            f"Dropped invalid {description} (HNM.DATA.INVALID_ANNOTATIONS is drop; "
            f"{self.num_dropped_annotations} dropped so far by this mapper)."
        )
        # Mapping outside a trainer, or in a DataLoader worker process, has no EventStorage.
        if has_event_storage():
            get_event_storage().put_scalar(
                DROPPED_ANNOTATIONS_SCALAR, self.num_dropped_annotations, smoothing_hint=False
            )


def _num_classes_of_training_data(cfg) -> int:
    """Thing-class count of cfg.DATASETS.TRAIN, or cfg.MODEL.ROI_HEADS.NUM_CLASSES.

    Raises:
        ValueError: the training datasets declare different thing_classes.
    """
    classes_by_dataset = {
        name: MetadataCatalog.get(name).get("thing_classes") for name in cfg.DATASETS.TRAIN
    }
    declared = {name: classes for name, classes in classes_by_dataset.items() if classes}
    if not declared:
        logger.info(
            "No dataset in DATASETS.TRAIN declares thing_classes: category ids are checked "
            f"against MODEL.ROI_HEADS.NUM_CLASSES = {cfg.MODEL.ROI_HEADS.NUM_CLASSES}."
        )
        return cfg.MODEL.ROI_HEADS.NUM_CLASSES
    distinct = {tuple(classes) for classes in declared.values()}
    if len(distinct) > 1:
        listing = "; ".join(f"{name}: {list(classes)}" for name, classes in declared.items())
        raise ValueError(
            f"The datasets of DATASETS.TRAIN declare different thing_classes ({listing}), so "
            "category ids would mean different classes. Register them with one class list."
        )
    return len(distinct.pop())
