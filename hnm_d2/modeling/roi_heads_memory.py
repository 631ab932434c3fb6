"""The feature memory in the heads (MODEL.HNM.FEATURE_MEMORY): the pooled features of
earlier iterations' hard negatives re-fed to the box head as background, and this iteration's
hard background RoIs added (:class:`HardNegativeFeatureMemory`).
"""

from typing import List

import torch
from detectron2.layers import cat
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from .feature_memory import HardNegativeFeatureMemory
from .hard_negatives import HardNegativePicking

__all__ = ["ROIHeadsMemory"]


class ROIHeadsMemory(HardNegativePicking):
    """Mixin of the hnm_d2 ROI heads: the feature memory's side of a training step. The heads
    set ``feature_memory`` and ``hard_negative_max_iou``."""

    @classmethod
    def _memory_args(cls, cfg):
        memory = cfg.MODEL.HNM.FEATURE_MEMORY
        if not memory.ENABLED:
            return {}
        return {
            "feature_memory": HardNegativeFeatureMemory(
                capacity=memory.CAPACITY,
                max_age=memory.MAX_AGE,
                score_thresh=memory.SCORE_THRESH,
                per_iter=memory.PER_ITER,
                warmup_iters=memory.WARMUP_ITERS,
            ),
            "hard_negative_max_iou": memory.MAX_OBJECT_IOU,
        }

    def _train_on_memory(self, loss_cls, pooled, proposals: List[Instances]) -> torch.Tensor:
        """``loss_cls`` with up to PER_ITER memory entries of earlier iterations as background.

        The entries go through this iteration's box head and predictor (the memory holds no
        gradient: only the head and predictor learn from them), and are re-scored.

        Normaliser: the stock loss_cls is a mean over the R sampled RoIs; the result is the mean
        over those R and the M re-fed entries, ``(R * loss_cls + loss_weight * sum_m l_m) /
        (R + M)``, each entry's l_m the predictor's own classification loss against background.
        """
        memory, iteration = self.feature_memory, get_event_storage().iter
        memory.expire(iteration)
        indices = memory.sample(iteration)
        get_event_storage().put_scalar("hnm/memory_refed", len(indices))
        if len(indices) == 0:
            return loss_cls
        class_logits, _ = self.box_predictor(self.box_head(memory.entries(indices)))
        background = torch.full_like(indices, self.num_classes).to(class_logits.device)
        memory_losses = self.box_predictor.classification_losses(class_logits, background)
        weight = self.box_predictor.loss_weight.get("loss_cls", 1.0)
        num_rois = sum(len(p) for p in proposals)
        memory.rescore(indices, self._object_scores(class_logits))
        return (num_rois * loss_cls + weight * memory_losses.sum()) / (num_rois + len(indices))

    def _remember_hard_features(self, pooled, proposals: List[Instances], predictions):
        """Add this iteration's hard background RoIs (pooled features) to the memory."""
        is_clear = cat([self._clear_of_objects(p) for p in proposals])
        scores = self._object_scores(predictions[0])
        self.feature_memory.add(pooled[is_clear], scores[is_clear], get_event_storage().iter)
        get_event_storage().put_scalar("hnm/memory_size", self.feature_memory.num_entries)
