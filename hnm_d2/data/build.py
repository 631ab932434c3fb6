"""``build_hnm_train_loader``: detectron2's train loader with the negative-aware mapper, sampler."""

import logging
from typing import Callable, Optional

from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts

from ..config import validate_hnm_config
from ..modeling.key_check import check_hnm_keys_are_used
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

    Image ids may repeat across the datasets of DATASETS.TRAIN (separate COCO files all number
    from 1, and stock detectron2 trains on them): hnm_d2 identifies an image by its file.
    """
    validate_hnm_config(cfg, prefix="HNM.DATA")
    check_hnm_keys_are_used(cfg)
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
    if mapper is None:
        mapper = NegativeAwareDatasetMapper(cfg, True)
    # With the natural share (-1) detectron2 builds DATALOADER.SAMPLER_TRAIN itself, so any
    # stock sampler a config names keeps working.
    use_stock_sampler = cfg.HNM.DATA.NEGATIVE_FRACTION == -1
    sampler = None if use_stock_sampler else build_training_sampler(cfg, dataset)
    return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler)
