"""Training loaders: detectron2's, with the negative-aware mapper and the negative-share sampler.

``build_hnm_train_loader`` builds from a yacs config; ``build_negative_share_train_loader`` takes
plain arguments, for LazyConfig (``L(build_negative_share_train_loader)(...)``).
"""

import logging
from typing import Callable, List, Optional

from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts

from ..config import validate_hnm_config
from ..key_check import check_hnm_keys_are_used
from .mapper import NegativeAwareDatasetMapper
from .sampler import NegativeShareTrainingSampler, build_training_sampler
from .subsets import is_negative_image

__all__ = ["build_hnm_train_loader", "build_negative_share_train_loader"]

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


def build_negative_share_train_loader(
    dataset: List[dict], *, negative_fraction: float, seed: Optional[int] = None, **kwargs
):
    """detectron2's train loader drawing ``negative_fraction`` of its images from the negative
    ones: HNM.DATA.NEGATIVE_FRACTION without a yacs config (LazyConfig).

    Args:
        dataset (list[dict]): the training dataset dicts, negatives kept (``filter_empty=False``).
        negative_fraction (float): in [0, 1], the share of negative images drawn; -1 = their
            natural share (detectron2's own sampler), as HNM.DATA.NEGATIVE_FRACTION -1.
        seed (int or None): the sampler's seed; None = one random seed shared by every rank.
        kwargs: the other arguments of detectron2's ``build_detection_train_loader`` (mapper,
            total_batch_size, num_workers, ...).

    Returns:
        detectron2's infinite training DataLoader.
    """
    if "sampler" in kwargs:
        raise ValueError(
            "build_negative_share_train_loader builds its own sampler from negative_fraction: "
            "drop sampler=, or use detectron2's build_detection_train_loader for your sampler "
            "(negative_fraction -1 is detectron2's TrainingSampler)."
        )
    flags = [is_negative_image(d) for d in dataset]
    if not any(flags):
        logger.warning(
            "The training dataset holds no negative image: get_detection_dataset_dicts drops "
            "them unless filter_empty=False (LazyConfig: dataloader.train.dataset.filter_empty)."
        )
    if negative_fraction == -1:
        return build_detection_train_loader(dataset, **kwargs)
    sampler = NegativeShareTrainingSampler(flags, negative_fraction, seed=seed)
    return build_detection_train_loader(dataset, sampler=sampler, **kwargs)
