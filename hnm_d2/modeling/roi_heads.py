"""HNMROIHeads: StandardROIHeads with OHEM over RoIs, the hard-negative buffer and the feature
memory. This file overrides detectron2's hooks and composes the mechanisms, each in its file:

- OHEM (MODEL.HNM.ROI_OHEM): :mod:`.roi_heads_ohem`; the box branch trains on the kept RoIs.
- Hard-negative buffer (MODEL.HNM.BUFFER) and negative boxes (a dataset's own, on when the
  inputs carry them): :mod:`.roi_heads_buffer`; their boxes join the sampled proposals, and
  the box branch's hard background RoIs are recorded by the buffer after it has run.
- Feature memory (MODEL.HNM.FEATURE_MEMORY): :mod:`.roi_heads_memory`; its entries join
  the classification loss, and the box branch's hard background RoIs are added after it has run.
- Negative-image top-k loss (MODEL.HNM.NEGATIVE_IMAGE_LOSS): :mod:`.roi_heads_negative_topk`;
  wraps ``forward`` and takes its own constructor arguments, so it needs nothing here.
- What the buffer and the memory share (which RoIs are hard negatives): :mod:`.hard_negatives`.
- Build-time refusals: :mod:`.roi_heads_checks`.

Everything is off by default, and off means stock: the overrides hand over to ``super()``.
"""

import contextlib
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Instances

from ..config import validate_hnm_config
from ..key_check import check_hnm_keys_are_used
from .buffer import HardNegativeBuffer
from .fast_rcnn import hnm_predictor_replacing
from .feature_memory import HardNegativeFeatureMemory
from .roi_heads_buffer import ImageVisit, ROIHeadsBuffer
from .roi_heads_checks import ROIHeadsChecks, check_head_arguments
from .roi_heads_memory import ROIHeadsMemory
from .roi_heads_negative_topk import ROIHeadsNegativeTopK
from .roi_heads_ohem import SAMPLE_EVERY_PROPOSAL, ROIHeadsOHEM

__all__ = ["HNMROIHeads"]


@ROI_HEADS_REGISTRY.register()
class HNMROIHeads(
    ROIHeadsOHEM,
    ROIHeadsBuffer,
    ROIHeadsMemory,
    ROIHeadsNegativeTopK,
    ROIHeadsChecks,
    StandardROIHeads,
):
    """StandardROIHeads with OHEM over RoIs, the hard-negative buffer or the feature memory, and
    the :class:`HNMFastRCNNOutputLayers` box predictor (background weight, focal loss).

    Everything a mechanism needs is set up by the constructor, so the heads behave the same
    whether ``from_config`` (yacs) or LazyConfig's ``instantiate`` builds them, and a setting
    a mechanism does not support fails here, naming the config key and the argument.
    """

    @configurable
    def __init__(
        self,
        *,
        ohem_enabled: bool = False,
        ohem_batch_size_per_image: Optional[int] = None,
        ohem_nms_thresh: float = 0.7,
        ohem_min_positive_fraction: float = 0.0,
        hard_negative_buffer: Optional[HardNegativeBuffer] = None,
        buffer_bg_share: float = 0.25,
        hard_negative_max_iou: float = 0.3,
        feature_memory: Optional[HardNegativeFeatureMemory] = None,
        **kwargs,
    ):
        """
        Args:
            ohem_enabled (bool): train the box head on the hardest RoIs (OHEM). The box
                predictor must be a :class:`HNMFastRCNNOutputLayers` (it ranks the RoIs).
            ohem_batch_size_per_image (int or None): B, RoIs kept per image by OHEM; None =
                ``batch_size_per_image``.
            ohem_nms_thresh (float): IoU of the NMS over the loss ranking (1.0 = none).
            ohem_min_positive_fraction (float): share of B reserved for foreground RoIs.
            hard_negative_buffer (HardNegativeBuffer or None): None = no buffer.
            hard_negative_max_iou (float): a background RoI overlapping an object by this IoU
                or more is not stored by the buffer or the feature memory
                (MODEL.HNM.BUFFER.MAX_OBJECT_IOU or MODEL.HNM.FEATURE_MEMORY.MAX_OBJECT_IOU).
            buffer_bg_share (float): share of an image's background quota guaranteed to its
                buffered boxes (without OHEM).
            feature_memory (HardNegativeFeatureMemory or None): the cross-batch memory of hard
                negatives' pooled features (MODEL.HNM.FEATURE_MEMORY); None = none.
            kwargs: the arguments of :class:`StandardROIHeads` and of
                :class:`ROIHeadsNegativeTopK` (``negative_image_topk``,
                ``negative_image_loss_weight``).
        """
        check_head_arguments(
            type(self).__name__,
            ohem_batch_size_per_image=ohem_batch_size_per_image,
            ohem_nms_thresh=ohem_nms_thresh,
            ohem_min_positive_fraction=ohem_min_positive_fraction,
            buffer_bg_share=buffer_bg_share,
            hard_negative_max_iou=hard_negative_max_iou,
            memory_on=feature_memory is not None,
        )
        if ohem_enabled:
            ohem_batch_size_per_image = ohem_batch_size_per_image or kwargs["batch_size_per_image"]
            kwargs.update(SAMPLE_EVERY_PROPOSAL)
        super().__init__(**kwargs)
        self.ohem_enabled = ohem_enabled
        self.ohem_batch_size_per_image = ohem_batch_size_per_image
        self.ohem_nms_thresh = ohem_nms_thresh
        self.ohem_min_positive_fraction = ohem_min_positive_fraction
        self.hard_negative_buffer = hard_negative_buffer
        self.buffer_bg_share = buffer_bg_share
        self.hard_negative_max_iou = hard_negative_max_iou
        self.feature_memory = feature_memory
        # The batch's images while HNMRCNN runs the heads with the buffer on or negative boxes
        # in the batch (ROIHeadsBuffer.visiting); None otherwise.
        self._visit: Optional[ImageVisit] = None
        # The RoIs OHEM kept in this training step, from _forward_box to _forward_mask: stock
        # forward hands both the same proposals, and the mask head must train on the kept ones.
        self._ohem_kept: Optional[List[Instances]] = None
        if ohem_enabled:
            self._check_ohem_supported()
        if feature_memory is not None:
            self._check_memory_supported()

    @classmethod
    def from_config(cls, cfg, input_shape):
        validate_hnm_config(cfg, prefix="MODEL.HNM")
        check_hnm_keys_are_used(cfg)
        ret = super().from_config(cfg, input_shape)
        ret.update(cls._ohem_args(cfg))
        ret.update(cls._buffer_args(cfg))
        ret.update(cls._memory_args(cfg))
        ret.update(cls._negative_image_loss_args(cfg))
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = hnm_predictor_replacing(
            cfg, ret["box_predictor"], ret["box_head"].output_shape
        )
        return ret

    def _box_predictors(self) -> list:
        """The box predictor of each stage (one here; a cascade has several)."""
        return [self.box_predictor]

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: List[Instances], targets: List[Instances]
    ) -> List[Instances]:
        """Stock labelling and sampling; with the buffer on or negative boxes in the batch
        (then :meth:`visiting` set ``_visit``), plus each image's injected background
        (:meth:`_label_and_sample_with_injected_background`)."""
        if self.hard_negative_buffer is None and self._visit is None:
            return super().label_and_sample_proposals(proposals, targets)
        return self._label_and_sample_with_injected_background(
            proposals, targets, super().label_and_sample_proposals
        )

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """Stock box branch, except in training with OHEM, the buffer or the memory on.

        With OHEM, :meth:`_forward_box_ohem` trains on the hardest RoIs; otherwise the stock
        branch trains. Then the hard negatives among the RoIs that were trained on (all sampled
        ones, or the kept ones under OHEM) are recorded: by the buffer, with the image's
        buffered boxes re-scored; by the memory, after its entries joined ``loss_cls``.
        """
        mining = (
            self.ohem_enabled
            or self.hard_negative_buffer is not None
            or self.feature_memory is not None
        )
        if not self.training or not mining:
            return super()._forward_box(features, proposals)
        if self.ohem_enabled:
            losses, proposals, pooled, predictions = self._forward_box_ohem(features, proposals)
            self._ohem_kept = proposals
        else:
            losses, pooled, predictions = self._stock_box_branch_recorded(features, proposals)
        if self.hard_negative_buffer is not None:
            self._remember_hard_negatives(features, proposals, predictions)
        if self.feature_memory is not None:
            losses["loss_cls"] = self._train_on_memory(losses["loss_cls"], pooled, proposals)
            self._remember_hard_features(pooled, proposals, predictions)
        return losses

    def _stock_box_branch_recorded(
        self, features: Dict[str, torch.Tensor], proposals: List[Instances]
    ):
        """The stock box branch in training, and what it computed on the way.

        Forward hooks on the box head and predictor, because the stock ``_forward_box`` returns
        only the losses, and a copy of it would drift from detectron2's.

        Returns:
            dict: the stock losses.
            Tensor: the pooled features of ``proposals``, shape (R_total, C, S, S).
            tuple[Tensor, Tensor]: the box predictor's outputs on them.
        """
        # A copy to the stock branch, which may replace its boxes (TRAIN_ON_PRED_BOXES).
        with _recording(self.box_head) as head_calls, _recording(self.box_predictor) as calls:
            losses = super()._forward_box(features, [p[:] for p in proposals])
        (pooled,), predictions = head_calls[0][0], calls[0][1]
        return losses, pooled, predictions

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """Stock mask branch; in training under OHEM, on the foreground RoIs OHEM kept.

        The stock forward hands the mask head the proposals the box head was given, which under
        OHEM are every labelled candidate: the mask loss would average over RoIs the box head
        did not train on. It trains on the kept ones instead (their foreground, as stock).
        """
        if self.training and self.ohem_enabled:
            instances, self._ohem_kept = self._ohem_kept, None
        return super()._forward_mask(features, instances)


@contextlib.contextmanager
def _recording(module: torch.nn.Module):
    """Collect (inputs, output) of each call of ``module`` while the context is open."""
    calls = []
    handle = module.register_forward_hook(lambda _module, inputs, out: calls.append((inputs, out)))
    try:
        yield calls
    finally:
        handle.remove()
