"""OHEM over RoIs (MODEL.HNM.ROI_OHEM, Shrivastava et al. 2016), the part of the ROI heads that
chooses the RoIs the box head trains on.

In training every proposal (gt boxes appended as usual) is labelled, none is sampled at random;
the box head scores all of them without gradients, :func:`select_hard_rois` keeps the top-B by
loss after NMS over the loss ranking, and the stock ``losses()`` runs on the kept RoIs only, so
both losses are divided by the number of KEPT RoIs (the paper's normaliser).
"""

from typing import Dict, List

import torch
from detectron2.layers import cat
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from .ohem import select_hard_rois

__all__ = ["ROIHeadsOHEM", "SAMPLE_EVERY_PROPOSAL"]

# The stock sampler's arguments under OHEM, which samples by loss: the stock sampler must label
# and hand over every proposal, so an unbounded budget that positives may fill entirely.
SAMPLE_EVERY_PROPOSAL = {"batch_size_per_image": 2**31 - 1, "positive_fraction": 1.0}


class ROIHeadsOHEM:
    """Mixin of the hnm_d2 ROI heads: OHEM's choice of RoIs and the box branch that trains on
    them. The heads set ``ohem_enabled``, ``ohem_batch_size_per_image``, ``ohem_nms_thresh`` and
    ``ohem_min_positive_fraction``."""

    @classmethod
    def _ohem_args(cls, cfg):
        ohem = cfg.MODEL.HNM.ROI_OHEM
        if not ohem.ENABLED:
            return {}
        return {
            "ohem_enabled": True,
            "ohem_batch_size_per_image": ohem.BATCH_SIZE_PER_IMAGE or None,
            "ohem_nms_thresh": ohem.NMS_THRESH,
            "ohem_min_positive_fraction": ohem.MIN_POSITIVE_FRACTION,
        }

    def _forward_box_ohem(self, features: Dict[str, torch.Tensor], proposals: List[Instances]):
        """OHEM box branch: rank every proposal by loss without gradients, train on the top-B.

        The kept RoIs are pooled a second time, with gradients, rather than indexed out of a
        pooling of all candidates with gradients: ROIAlign's backward costs in proportion to
        the RoIs pooled, gradient or not, so back-propagating through all candidates' pooled
        features is far slower (measured: docs/BENCHMARKS.md, "Cost of the head mechanisms").
        It also never holds the candidates' pooled features for the backward pass. (A box
        head with BatchNorm, MODEL.ROI_BOX_HEAD.NORM, updates its running statistics in both
        passes.)

        Returns:
            dict: loss_cls, loss_box_reg from the predictor's stock ``losses()`` on the kept
                RoIs (each divided by the number of kept RoIs).
            list[Instances]: the kept proposals of each image.
            Tensor: their pooled features, shape (K_total, C, S, S).
            tuple[Tensor, Tensor]: the predictor's outputs on the kept RoIs.
        """
        box_features = [features[f] for f in self.box_in_features]

        def pool(rois: List[Instances]) -> torch.Tensor:
            return self.box_pooler(box_features, [p.proposal_boxes for p in rois])

        def predict(rois: List[Instances]):
            return self.box_predictor(self.box_head(pool(rois)))

        kept, _ = self._ohem_keep(proposals, predict, self.box_predictor)
        pooled = pool(kept)
        predictions = self.box_predictor(self.box_head(pooled))
        return self.box_predictor.losses(predictions, kept), kept, pooled, predictions

    def _ohem_keep(self, proposals: List[Instances], predict, predictor):
        """OHEM's choice: every candidate scored by ``predict`` without gradients, then per
        image the hardest B by ``predictor.per_roi_losses`` (after NMS over that ranking).

        Returns:
            list[Instances]: the kept proposals of each image.
            tuple[Tensor, Tensor]: the no-gradient predictions on every candidate.
        """
        with torch.no_grad():
            ranking = predict(proposals)
            per_roi_losses = predictor.per_roi_losses(ranking, proposals)
        keep = self._select_hard_rois(proposals, per_roi_losses)
        return [p[k] for p, k in zip(proposals, keep)], ranking

    def _select_hard_rois(self, proposals: List[Instances], per_roi_losses: torch.Tensor):
        """Per image, the indices of the RoIs OHEM keeps (and the hnm/ohem_* telemetry).

        Args:
            proposals (list[Instances]): the labelled candidates of each image.
            per_roi_losses (Tensor): shape (R_total,), their losses, images concatenated.

        Returns:
            list[Tensor]: int64 indices into each image's proposals.
        """
        keep = []
        for p, losses in zip(proposals, per_roi_losses.split([len(p) for p in proposals])):
            is_fg = p.gt_classes != self.num_classes
            keep.append(
                select_hard_rois(
                    losses,
                    p.proposal_boxes.tensor,
                    is_fg,
                    self.ohem_batch_size_per_image,
                    self.ohem_nms_thresh,
                    self.ohem_min_positive_fraction,
                )
            )
        self._log_ohem(proposals, per_roi_losses, keep)
        return keep

    def _log_ohem(self, proposals, per_roi_losses, keep):
        """hnm/ohem_* scalars: kept RoIs per image by label, mean loss of kept and dropped."""
        is_kept = cat(
            [
                torch.zeros(len(p), dtype=torch.bool, device=k.device).index_fill(0, k, True)
                for p, k in zip(proposals, keep)
            ]
        )
        is_fg = cat([p.gt_classes != self.num_classes for p in proposals])
        storage = get_event_storage()
        storage.put_scalar("hnm/ohem_kept_pos", int((is_kept & is_fg).sum()) / len(proposals))
        storage.put_scalar("hnm/ohem_kept_neg", int((is_kept & ~is_fg).sum()) / len(proposals))
        if is_kept.any():
            storage.put_scalar("hnm/ohem_kept_loss_mean", per_roi_losses[is_kept].mean().item())
        if not is_kept.all():
            storage.put_scalar("hnm/ohem_dropped_loss_mean", per_roi_losses[~is_kept].mean().item())
