"""A cross-batch memory of hard negatives: the pooled RoI features of background boxes the model
scored high, re-fed to the box head as background in the following iterations.

The box buffer (:mod:`hnm_d2.modeling.buffer`) brings a hard negative back only when its image
is drawn again, about once per epoch (on a cluster, on whichever rank draws it). This memory
keeps the features instead, so every iteration trains on the hardest negatives of the last
iterations of every rank, whatever images they came from. The features were pooled by an older
backbone: cross-batch memory (Wang et al., CVPR 2020, XBM) shows that features drift slowly
once training is past its first phase, so entries are kept at most MAX_AGE iterations and
recording starts after WARMUP_ITERS.

Every re-fed entry is re-scored by the box head of that iteration; one the model now scores
below the threshold leaves, like a box buffer entry re-scored on a visit.

Distributed: each rank's hardest new entries (at most CAPACITY / world size, to bound what is
gathered) are all-gathered, and the entries re-fed are drawn with a generator seeded by the
iteration, so every rank holds, re-feeds and re-scores the same memory (up to floating point).
The memory is not checkpointed: it is at most MAX_AGE iterations of features, refilled within
a few iterations after a resume.
"""

from typing import Optional

import torch
from detectron2.utils import comm
from torch import nn

from ..config import check_arguments

__all__ = ["HardNegativeFeatureMemory"]


class HardNegativeFeatureMemory(nn.Module):
    """Pooled features of hard negatives, newest first, on the model's device."""

    def __init__(
        self, *, capacity: int, max_age: int, score_thresh: float, per_iter: int, warmup_iters: int
    ):
        """
        Args:
            capacity (int): entries kept; the oldest leave first
                (MODEL.HNM.FEATURE_MEMORY.CAPACITY).
            max_age (int): iterations an entry is kept (MODEL.HNM.FEATURE_MEMORY.MAX_AGE).
            score_thresh (float): lowest score of a hard negative (its highest object-class
                probability; MODEL.HNM.FEATURE_MEMORY.SCORE_THRESH).
            per_iter (int): entries re-fed per iteration (MODEL.HNM.FEATURE_MEMORY.PER_ITER).
            warmup_iters (int): iterations before the first entry is recorded
                (MODEL.HNM.FEATURE_MEMORY.WARMUP_ITERS).
        """
        check_arguments(
            type(self).__name__,
            {
                "MODEL.HNM.FEATURE_MEMORY.CAPACITY": ("capacity", capacity),
                "MODEL.HNM.FEATURE_MEMORY.MAX_AGE": ("max_age", max_age),
                "MODEL.HNM.FEATURE_MEMORY.SCORE_THRESH": ("score_thresh", score_thresh),
                "MODEL.HNM.FEATURE_MEMORY.PER_ITER": ("per_iter", per_iter),
                "MODEL.HNM.FEATURE_MEMORY.WARMUP_ITERS": ("warmup_iters", warmup_iters),
            },
        )
        super().__init__()
        self.capacity, self.max_age, self.score_thresh = capacity, max_age, score_thresh
        self.per_iter, self.warmup_iters = per_iter, warmup_iters
        self.features: Optional[torch.Tensor] = None  # (n, C, S, S)
        self.scores = torch.zeros(0)
        self.iterations = torch.zeros(0, dtype=torch.int64)

    @property
    def num_entries(self) -> int:
        return len(self.scores)

    def add(self, features: torch.Tensor, scores: torch.Tensor, iteration: int):
        """Record the hard ones of this rank's background RoIs, gathered from every rank.

        Args:
            features (Tensor): (R, C, S, S) pooled features of background RoIs.
            scores (Tensor): (R,) their scores.
            iteration (int): the current iteration.
        """
        if iteration < self.warmup_iters:
            return
        hard = scores >= self.score_thresh
        features, scores = features[hard].detach(), scores[hard].detach()
        hardest = torch.argsort(scores, descending=True)[: self.capacity // comm.get_world_size()]
        features, scores = features[hardest], scores[hardest]
        if comm.get_world_size() > 1:
            parts = comm.all_gather((features.cpu(), scores.cpu()))
            device = features.device
            features = torch.cat([f for f, _ in parts]).to(device)
            scores = torch.cat([s for _, s in parts]).to(device)
        if self.features is None:
            self.features = features.new_zeros((0, *features.shape[1:]))
        self.features = torch.cat([features, self.features])[: self.capacity]
        self.scores = torch.cat([scores, self.scores.to(scores.device)])[: self.capacity]
        iterations = torch.full((len(scores),), iteration, dtype=torch.int64)
        self.iterations = torch.cat([iterations, self.iterations])[: self.capacity]

    def expire(self, iteration: int):
        """Drop the entries older than MAX_AGE iterations."""
        self._keep(iteration - self.iterations <= self.max_age)

    def sample(self, iteration: int) -> torch.Tensor:
        """Indices of up to PER_ITER entries to re-feed, drawn at random (the same on every
        rank: the generator is seeded by the iteration).

        Returns:
            Tensor: int64 indices into the entries, shape (M,).
        """
        generator = torch.Generator().manual_seed(iteration)
        return torch.randperm(self.num_entries, generator=generator)[: self.per_iter]

    def entries(self, indices: torch.Tensor) -> torch.Tensor:
        """The features of the entries at ``indices``, shape (M, C, S, S)."""
        return self.features[indices.to(self.features.device)]

    def rescore(self, indices: torch.Tensor, scores: torch.Tensor):
        """Give re-fed entries their new scores; the ones now easy leave."""
        self.scores[indices.to(self.scores.device)] = scores.detach().to(self.scores.device)
        self._keep(self.scores >= self.score_thresh)

    def _keep(self, mask: torch.Tensor):
        if self.features is None:
            return
        self.features = self.features[mask.to(self.features.device)]
        self.scores = self.scores[mask.to(self.scores.device)]
        self.iterations = self.iterations[mask.cpu()]
