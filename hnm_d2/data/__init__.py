"""Data path of hnm_d2: registration of datasets with negative images (COCO, VOC, YOLO, image
folders) and negative boxes, annotation checks, the negative-aware mapper, the negative-share
sampler, the train loader and synthetic data."""

from .build import build_hnm_train_loader, build_negative_share_train_loader
from .coco import load_coco_with_negatives, register_coco_with_negatives
from .command_line import add_registration_arguments, register_from_args
from .mapper import (
    INVALID_ANNOTATION_POLICIES,
    ImageReadError,
    NegativeAwareDatasetMapper,
)
from .negative_boxes import NEGATIVE_BOXES
from .negative_folder import load_negative_folder, register_negative_folder
from .registration import IMAGE_EXTENSIONS, MISSING_IMAGE_POLICIES, name_id_offset
from .sampler import NegativeShareTrainingSampler, build_training_sampler
from .subsets import SUBSET_KINDS, is_negative_image, register_subset
from .synthetic import (
    DEFAULT_SPLIT_SIZES,
    DEMO_SPLIT_SIZES,
    generate_synthetic_coco,
    register_synthetic_splits,
)
from .validation import (
    BOUNDARY_TOLERANCE_PX,
    MAX_DEGENERATE_AREA_PX,
    InvalidAnnotationError,
    annotation_origin,
    describe_annotation,
    find_annotation_problem,
    find_negative_box_problem,
)
from .voc import load_voc_with_negatives, register_voc
from .yolo import load_yolo_with_negatives, register_yolo_with_negatives

__all__ = [
    "BOUNDARY_TOLERANCE_PX",
    "DEFAULT_SPLIT_SIZES",
    "DEMO_SPLIT_SIZES",
    "IMAGE_EXTENSIONS",
    "INVALID_ANNOTATION_POLICIES",
    "MISSING_IMAGE_POLICIES",
    "ImageReadError",
    "InvalidAnnotationError",
    "MAX_DEGENERATE_AREA_PX",
    "NEGATIVE_BOXES",
    "NegativeAwareDatasetMapper",
    "NegativeShareTrainingSampler",
    "SUBSET_KINDS",
    "add_registration_arguments",
    "annotation_origin",
    "build_hnm_train_loader",
    "build_negative_share_train_loader",
    "build_training_sampler",
    "describe_annotation",
    "find_annotation_problem",
    "find_negative_box_problem",
    "generate_synthetic_coco",
    "is_negative_image",
    "load_coco_with_negatives",
    "load_negative_folder",
    "load_voc_with_negatives",
    "load_yolo_with_negatives",
    "name_id_offset",
    "register_coco_with_negatives",
    "register_from_args",
    "register_negative_folder",
    "register_subset",
    "register_synthetic_splits",
    "register_voc",
    "register_yolo_with_negatives",
]
