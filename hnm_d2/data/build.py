"""``build_hnm_train_loader``: detectron2's train loader with the negative-aware mapper, sampler."""

import logging
from typing import Callable, List, Optional

from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts

from ..config import validate_hnm_config
from .mapper import NegativeAwareDatasetMapper
from .sampler import build_training_sampler

__all__ = ["build_hnm_train_loader"]

logger = logging.getLogger(__name__)


def build_hnm_train_loader(cfg, mapper: Optional[Callable] = None):
    """The training data loader of cfg.DATASETS.TRAIN, negative images included.

    Args:
        cfg: a config with the hnm_d2 keys.
        mapper: dataset-dict mapper; None = ``NegativeAwareDatasetMapper(cfg, True)``.

    Returns:
        detectron2's infinite training DataLoader, yielding lists of mapped dicts.

    Raises:
        ValueError: two different image files of the training data share an image id.
    """
    validate_hnm_config(cfg, prefix="HNM.DATA")
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        logger.warning(
            "DATALOADER.FILTER_EMPTY_ANNOTATIONS is True: detectron2 removes every negative "
            "image from DATASETS.TRAIN (it logs how many). Set it False to train on them."
        )
    dataset = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=0,
        proposal_files=None,
    )
    _check_unique_image_ids(dataset)
    if mapper is None:
        mapper = NegativeAwareDatasetMapper(cfg, True)
    # With the natural share (-1) detectron2 builds DATALOADER.SAMPLER_TRAIN itself, so any
    # stock sampler a config names keeps working.
    use_stock_sampler = cfg.HNM.DATA.NEGATIVE_FRACTION == -1
    sampler = None if use_stock_sampler else build_training_sampler(cfg, dataset)
    return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler)


def _check_unique_image_ids(dataset_dicts: List[dict]) -> None:
    # The hard-negative buffer keys its boxes by image id: two files under one id would share
    # (and corrupt) each other's entries. The same file twice (oversampling) is harmless.
    file_of_id = {}
    for d in dataset_dicts:
        image_id, file_name = d.get("image_id"), d.get("file_name")
        if file_of_id.setdefault(image_id, file_name) != file_name:
            raise ValueError(
                f"DATASETS.TRAIN: image id {image_id!r} belongs to both {file_of_id[image_id]} "
                f"and {file_name}. Give one of the datasets other ids (register_negative_folder "
                "takes id_offset)."
            )
