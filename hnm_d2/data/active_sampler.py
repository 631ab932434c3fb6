"""``ActiveSubsetTrainingSampler``: detectron2's infinite training sampler over a subset of the
dataset that can grow while training runs (online image-level mining adds pool images to it).

The subset is a boolean mask over the dataset in shared memory, with a version counter: the
DataLoader's worker processes iterate copies of the sampler, and shared memory is what lets them
see images activated by the main process. When the version changes the sampler starts a new
shuffled pass over the active images, so an activated image is drawn within the next pass, not
after the current one ends (which, for a large dataset, could be thousands of iterations).

Like detectron2's ``TrainingSampler`` it draws one seeded stream, the same on every rank, and
each rank takes every world_size-th index. Activation happens on every rank at the same
iteration, but the workers notice it a few prefetched batches apart, so around an activation
the ranks' shards may overlap or skip a few images.
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

    def __init__(self, size: int, initially_active: Sequence[int], seed: Optional[int] = None):
        """
        Args:
            size (int): images in the dataset.
            initially_active (Sequence[int]): indices of the images drawn from the start.
            seed (int or None): seed of the shuffle, the same on every rank; None = a seed
                shared by the ranks (detectron2's ``comm.shared_random_seed``).
        """
        self.active = torch.zeros(size, dtype=torch.bool).share_memory_()
        self.active[torch.as_tensor(list(initially_active), dtype=torch.int64)] = True
        self._version = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = comm.get_rank(), comm.get_world_size()

    def activate(self, indices: Sequence[int]) -> None:
        """Add images to the drawn subset (call it on every rank with the same indices)."""
        self.active[torch.as_tensor(list(indices), dtype=torch.int64)] = True
        self._version += 1

    @property
    def num_active(self) -> int:
        return int(self.active.sum())

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        generator = torch.Generator()
        generator.manual_seed(self._seed)
        while True:
            version = int(self._version)
            active = torch.nonzero(self.active).squeeze(1)
            for index in active[torch.randperm(len(active), generator=generator)].tolist():
                if int(self._version) != version:
                    break  # new images: start a pass that includes them
                yield index
