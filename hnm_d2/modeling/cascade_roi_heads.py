"""HNMCascadeROIHeads: CascadeROIHeads with OHEM and down-weighting per stage, and the
hard-negative buffer fed from the last stage.

Everything is off by default, and off means stock Cascade R-CNN: the overrides hand over to
``super()``.

- Down-weighting and focal loss: every stage's predictor is an
  :class:`HNMFastRCNNOutputLayers` (MODEL.HNM.ROI_BG_WEIGHT, MODEL.HNM.ROI_FOCAL).
- OHEM (MODEL.HNM.ROI_OHEM): each stage scores all its candidates without gradients, trains on
  its own top-B by loss, and hands the next stage the refined boxes of *all* its candidates,
  as stock Cascade R-CNN hands over every sampled RoI: each stage mines from the whole
  distribution of its input, not from what the stage before found hard.
- Buffer (MODEL.HNM.BUFFER): the last stage's background RoIs are scored by the
  last stage (its probability on its input box; inference averages the stages' probabilities
  on the refined boxes, so a stored score approximates the detection score) and recorded; they
  come back as stage-0 proposals on the image's next visit. A RoI is stored only below stage 0's
  foreground IoU (0.5 by default), the matcher that labels it when it comes back, not below the
  last stage's stricter one (HardNegativePicking._clear_of_objects).

The mask head (Mask R-CNN) trains on stage 0's RoIs as stock, under OHEM on the kept ones.
"""

from typing import Dict, List

import torch
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from ..config import HNMConfigError
from .fast_rcnn import hnm_predictor_replacing
from .roi_heads import HNMROIHeads

__all__ = ["HNMCascadeROIHeads"]


@ROI_HEADS_REGISTRY.register()
class HNMCascadeROIHeads(CascadeROIHeads, HNMROIHeads):
    """Cascade R-CNN heads with hnm_d2's mechanisms (see the module docstring).

    Takes the arguments of :class:`CascadeROIHeads` and those of :class:`HNMROIHeads`, except
    ``feature_memory``: the memory re-feeds pooled features to one box head, a cascade has one
    per stage.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictors"] = [
            hnm_predictor_replacing(
                cfg, stock, head.output_shape, box2box_transform=stock.box2box_transform
            )
            for head, stock in zip(ret["box_heads"], ret["box_predictors"])
        ]
        return ret

    def _box_predictors(self) -> list:
        return list(self.box_predictor)

    def _settings_ohem_cannot_train(self) -> Dict[str, tuple]:
        settings = super()._settings_ohem_cannot_train()
        # CascadeROIHeads never reads it: its later stages train on refined boxes anyway.
        settings.pop("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES")
        return settings

    def _check_memory_supported(self):
        raise HNMConfigError(
            "MODEL.HNM.FEATURE_MEMORY.ENABLED (feature_memory) is not supported by "
            "HNMCascadeROIHeads: the memory re-feeds pooled features to a single box head, and a "
            "cascade has one per stage. Use MODEL.HNM.BUFFER.ENABLED (the box buffer, fed from "
            "the last stage) instead, or MODEL.ROI_HEADS.NAME 'HNMROIHeads'."
        )

    def _forward_box(self, features: Dict[str, torch.Tensor], proposals, targets=None):
        """Stock cascade, except in training with OHEM or the buffer on: the stages run
        :meth:`_train_stage` (the stock loop, with OHEM's choice of RoIs) and the buffer records
        the last stage's hard background RoIs."""
        mining = self.ohem_enabled or self.hard_negative_buffer is not None
        if not self.training or not mining:
            return super()._forward_box(features, proposals, targets)
        box_features = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        losses, storage, next_boxes = {}, get_event_storage(), None
        for stage in range(self.num_cascade_stages):
            if stage > 0:
                proposals = self._create_proposals_from_boxes(next_boxes, image_sizes)
                proposals = self._match_and_label_boxes(proposals, stage, targets)
            with storage.name_scope(f"stage{stage}"):
                trained, predictions, next_boxes = self._train_stage(box_features, proposals, stage)
                stage_losses = self.box_predictor[stage].losses(predictions, trained)
            losses.update({f"{name}_stage{stage}": v for name, v in stage_losses.items()})
            if stage == 0 and self.ohem_enabled:
                self._ohem_kept = trained  # the mask head's RoIs, as stock uses stage 0's
        if self.hard_negative_buffer is not None:
            self._remember_hard_negatives(features, trained, predictions)
        return losses

    def _train_stage(self, box_features: List[torch.Tensor], proposals: List[Instances], stage):
        """One stage in training.

        Returns:
            list[Instances]: the RoIs the stage trains on (all of them, or OHEM's kept ones).
            tuple[Tensor, Tensor]: the stage's predictions on them, with gradients.
            list[Tensor]: the refined boxes of every candidate, the next stage's proposals.
        """
        predictor = self.box_predictor[stage]
        if not self.ohem_enabled:
            predictions = self._run_stage(box_features, proposals, stage)
            return proposals, predictions, predictor.predict_boxes(predictions, proposals)

        def predict(rois: List[Instances]):
            return self._run_stage(box_features, rois, stage)

        kept, ranking = self._ohem_keep(proposals, predict, predictor)
        next_boxes = predictor.predict_boxes(ranking, proposals)
        return kept, self._run_stage(box_features, kept, stage), next_boxes

    def _last_stage_class_logits(self, features: Dict[str, torch.Tensor], rois: List[Instances]):
        box_features = [features[f] for f in self.box_in_features]
        class_logits, _ = self._run_stage(box_features, rois, self.num_cascade_stages - 1)
        return class_logits
