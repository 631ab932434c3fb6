"""Training sampler that fixes the share of negative images drawn, and its cfg builder.

``NegativeShareTrainingSampler`` is detectron2's ``TrainingSampler`` with two index streams:
one cycles through the negative images, one through the positive images (each reshuffled on
every pass, as TrainingSampler does), and each draw takes the negative stream with probability
``negative_fraction``. The stream is seeded identically on every rank and sharded like
TrainingSampler's, so ranks see disjoint, interleaved parts of one sequence.
"""

import itertools
import logging
from typing import Iterator, List, Optional, Sequence

import torch
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm
from torch.utils.data import Sampler

from ..config import validate_hnm_config
from .subsets import is_negative_image

__all__ = ["NegativeShareTrainingSampler", "build_training_sampler"]

logger = logging.getLogger(__name__)

# Group choices are drawn this many at a time: one generator call per draw would dominate.
_CHOICES_PER_CHUNK = 1024


class NegativeShareTrainingSampler(Sampler):
    """Infinite stream of dataset indices in which negatives have a fixed expected share."""

    def __init__(
        self,
        is_negative: Sequence[bool],
        negative_fraction: float,
        shuffle: bool = True,
        seed: Optional[int] = None,
        *,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        """
        Args:
            is_negative: one flag per dataset index, True for a negative image.
            negative_fraction: probability that a draw is a negative image, in [0, 1];
                0 never draws negatives, 1 draws nothing else.
            shuffle: reshuffle each group on every pass through it (else cycle in index order).
                The negative/positive choice of each draw is random either way.
            seed: seed shared by all ranks; None = ``comm.shared_random_seed()``, as
                TrainingSampler does (this synchronises the ranks).
            rank: this process's rank; None = ``comm.get_rank()``.
            world_size: number of ranks; None = ``comm.get_world_size()``.

        Raises:
            ValueError: the fraction is outside [0, 1], or it asks for a group that is empty.
        """
        negatives = [i for i, negative in enumerate(is_negative) if negative]
        positives = [i for i, negative in enumerate(is_negative) if not negative]
        _check_fraction(negative_fraction, len(negatives), len(positives))
        self._negatives = torch.tensor(negatives, dtype=torch.int64)
        self._positives = torch.tensor(positives, dtype=torch.int64)
        self._fraction = float(negative_fraction)
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank() if rank is None else rank
        self._world_size = comm.get_world_size() if world_size is None else world_size
        logger.info(
            f"NegativeShareTrainingSampler: {len(negatives)} negative and {len(positives)} "
            f"positive images, negative share {self._fraction:g}."
        )

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self._seed)
        negatives = self._cycle(self._negatives, generator)
        positives = self._cycle(self._positives, generator)
        while True:
            choices = torch.rand(_CHOICES_PER_CHUNK, generator=generator) < self._fraction
            for draw_negative in choices.tolist():
                yield next(negatives) if draw_negative else next(positives)

    def _cycle(self, indices: torch.Tensor, generator: torch.Generator) -> Iterator[int]:
        """Endless passes over ``indices``; only advanced when its group is drawn."""
        while True:
            order = torch.randperm(len(indices), generator=generator) if self._shuffle else None
            yield from (indices if order is None else indices[order]).tolist()


def _check_fraction(fraction: float, num_negative: int, num_positive: int) -> None:
    counts = f"the dataset has {num_negative} negative and {num_positive} positive images"
    if not 0 <= fraction <= 1:
        raise ValueError(f"negative_fraction {fraction!r} is outside [0, 1] ({counts}).")
    if fraction > 0 and num_negative == 0:
        raise ValueError(
            f"negative_fraction {fraction:g} asks for negative images, but {counts}. Add "
            "negative images (and set DATALOADER.FILTER_EMPTY_ANNOTATIONS False, which "
            "otherwise removes them; LazyConfig: get_detection_dataset_dicts(filter_empty="
            "False)), or set HNM.DATA.NEGATIVE_FRACTION (LazyConfig: negative_fraction) 0 or -1."
        )
    if fraction < 1 and num_positive == 0:
        raise ValueError(
            f"negative_fraction {fraction:g} asks for positive images, but {counts}. Add "
            "positive images, or set HNM.DATA.NEGATIVE_FRACTION (LazyConfig: negative_fraction) 1."
        )


def build_training_sampler(cfg, dataset_dicts: List[dict]) -> Sampler:
    """The training sampler for ``cfg.HNM.DATA.NEGATIVE_FRACTION``.

    Args:
        cfg: a config with the hnm_d2 keys.
        dataset_dicts: the training dataset dicts, in loader order.

    Returns:
        NegativeShareTrainingSampler for a fraction in [0, 1]; detectron2's TrainingSampler
        (the dataset's natural share of negatives) for -1. ``build_hnm_train_loader`` leaves
        the -1 case to detectron2, which also honours other DATALOADER.SAMPLER_TRAIN values.

    Raises:
        ValueError: a fraction in [0, 1] together with another DATALOADER.SAMPLER_TRAIN than
            TrainingSampler, which it would silently replace.
    """
    validate_hnm_config(cfg, prefix="HNM.DATA")
    fraction = cfg.HNM.DATA.NEGATIVE_FRACTION
    if fraction == -1:
        return TrainingSampler(len(dataset_dicts))
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ValueError(
            f"HNM.DATA.NEGATIVE_FRACTION {fraction:g} replaces the training sampler, but "
            f"DATALOADER.SAMPLER_TRAIN is {cfg.DATALOADER.SAMPLER_TRAIN}: set SAMPLER_TRAIN "
            "TrainingSampler, or NEGATIVE_FRACTION -1 to keep your sampler."
        )
    return NegativeShareTrainingSampler([is_negative_image(d) for d in dataset_dicts], fraction)
