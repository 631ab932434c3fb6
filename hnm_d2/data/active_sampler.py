"""``ActiveSubsetTrainingSampler``: detectron2's infinite training sampler over a subset of the
dataset that can grow while training runs (online image-level mining adds pool images to it).

The subset is a boolean mask over the dataset in shared memory: the DataLoader's worker
processes iterate copies of the sampler, and shared memory is what lets them see the images
the main process activates.

The stream is cut into blocks of a fixed length (by default the number of images active at the
start): block b is a random choice, without repeats, of that many of the images active when it
starts, shuffled by a generator seeded by (seed, b). Each worker (and each rank) iterates its
own copy of the stream and takes every n-th index of it, so the copies must agree index by
index: with a fixed block length they do, but for the one block during which an activation
reaches them at different moments. Breaking a pass when new images arrive would instead shift
the copies against each other for the rest of training. An activated image is drawn from the
next block on, i.e. within one pass over the initial training set.
"""

import itertools
from typing import Optional, Sequence

import torch
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

__all__ = ["ActiveSubsetTrainingSampler"]


class ActiveSubsetTrainingSampler(Sampler):
    """Infinite shuffled indices of the active images of a dataset.

    Attributes:
        active (Tensor): bool, shape (N,), shared memory: which images are drawn.
    """

    def __init__(
        self,
        size: int,
        initially_active: Sequence[int],
        seed: Optional[int] = None,
        block_size: Optional[int] = None,
    ):
        """
        Args:
            size (int): images in the dataset.
            initially_active (Sequence[int]): indices of the images drawn from the start.
            seed (int or None): seed of the shuffle, the same on every rank; None = a seed
                shared by the ranks (detectron2's ``comm.shared_random_seed``).
            block_size (int or None): indices per block; None = len(initially_active).
        """
        initially_active = list(initially_active)
        if not initially_active:
            raise ValueError("ActiveSubsetTrainingSampler needs at least one active image.")
        self.active = torch.zeros(size, dtype=torch.bool).share_memory_()
        self.active[torch.as_tensor(initially_active, dtype=torch.int64)] = True
        self._block_size = block_size or len(initially_active)
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = comm.get_rank(), comm.get_world_size()

    def activate(self, indices: Sequence[int]) -> None:
        """Add images to the drawn subset (call it on every rank with the same indices)."""
        self.active[torch.as_tensor(list(indices), dtype=torch.int64)] = True

    @property
    def num_active(self) -> int:
        return int(self.active.sum())

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        for block in itertools.count():
            generator = torch.Generator()
            generator.manual_seed((self._seed * 1_000_003 + block) % 2**63)
            active = torch.nonzero(self.active).squeeze(1)
            chosen = torch.randperm(len(active), generator=generator)[: self._block_size]
            yield from active[chosen].tolist()
