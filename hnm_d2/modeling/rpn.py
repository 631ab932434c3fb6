"""HNMRPN: the stock RPN with OHEM over anchors and background down-weighting.

OHEM (MODEL.HNM.RPN_OHEM): positives are sampled as stock (random, up to
POSITIVE_FRACTION * BATCH_SIZE_PER_IMAGE), every negative anchor stays a candidate, and
``losses()`` keeps per image the negatives with the highest objectness loss:
BATCH_SIZE_PER_IMAGE - #pos of them, at most NEG_POS_RATIO * #pos when the ratio is > 0 but
never fewer than MIN_NEGATIVES (so a negative image still trains the RPN on its hardest
background). The others are ignored (-1), then the stock ``losses()`` runs with its stock
normaliser, BATCH_SIZE_PER_IMAGE * #images.

Background weight (MODEL.HNM.RPN_BG_WEIGHT): the objectness loss becomes
``sum_a w_a * bce_a / (BATCH_SIZE_PER_IMAGE * #images)``, ``w_a`` the weight for negative
anchors and 1 for positive ones; the stock normaliser is kept, so weight 1.0 is the stock loss
(not recomputed at all) and positive anchors keep their scale.
"""

from typing import Dict, List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY, RPN
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage
from torch.nn import functional as F

from ..config import check_arguments, validate_hnm_config
from ..key_check import check_hnm_keys_are_used
from .losses import objectness_losses
from .ohem import keep_hardest_negatives, rpn_negative_quota

__all__ = ["HNMRPN"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class HNMRPN(RPN):
    """RPN with OHEM over anchors and background down-weighting (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        ohem_enabled: bool = False,
        ohem_neg_pos_ratio: float = 0.0,
        ohem_min_negatives: int = 64,
        bg_weight: float = 1.0,
        **kwargs,
    ):
        """
        Args:
            ohem_enabled (bool): keep the hardest negatives instead of random ones.
            ohem_neg_pos_ratio (float): cap on negatives per positive (0 = no cap).
            ohem_min_negatives (int): floor under that cap, per image.
            bg_weight (float): multiplies the objectness loss of negative anchors.
            kwargs: the arguments of :class:`RPN`.
        """
        check_arguments(
            type(self).__name__,
            {
                "MODEL.HNM.RPN_OHEM.NEG_POS_RATIO": ("ohem_neg_pos_ratio", ohem_neg_pos_ratio),
                "MODEL.HNM.RPN_OHEM.MIN_NEGATIVES": ("ohem_min_negatives", ohem_min_negatives),
                "MODEL.HNM.RPN_BG_WEIGHT": ("bg_weight", bg_weight),
            },
        )
        super().__init__(**kwargs)
        self.ohem_enabled = ohem_enabled
        self.ohem_neg_pos_ratio = ohem_neg_pos_ratio
        self.ohem_min_negatives = ohem_min_negatives
        self.bg_weight = bg_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        validate_hnm_config(cfg, prefix="MODEL.HNM")
        check_hnm_keys_are_used(cfg)
        ret = super().from_config(cfg, input_shape)
        ret["ohem_enabled"] = cfg.MODEL.HNM.RPN_OHEM.ENABLED
        ret["ohem_neg_pos_ratio"] = cfg.MODEL.HNM.RPN_OHEM.NEG_POS_RATIO
        ret["ohem_min_negatives"] = cfg.MODEL.HNM.RPN_OHEM.MIN_NEGATIVES
        ret["bg_weight"] = cfg.MODEL.HNM.RPN_BG_WEIGHT
        return ret

    def _subsample_labels(self, label: torch.Tensor) -> torch.Tensor:
        """Stock sampling; with OHEM every negative stays a candidate for ``losses()``.

        Args:
            label (Tensor): shape (A,), -1/0/1 per anchor; modified in place and returned.
        """
        if not self.ohem_enabled:
            return super()._subsample_labels(label)
        is_negative = label == 0
        label = super()._subsample_labels(label)
        label[is_negative] = 0
        return label

    def losses(
        self,
        anchors: List[Boxes],
        pred_objectness_logits: List[torch.Tensor],
        gt_labels: List[torch.Tensor],
        pred_anchor_deltas: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """Stock losses after the OHEM choice of negatives, with the weighted objectness loss.

        Args: see :meth:`RPN.losses` (logits: L tensors of shape (N, Hi*Wi*A); gt_labels: N
            tensors of shape (sum Hi*Wi*A,)).

        Returns:
            dict: loss_rpn_cls, loss_rpn_loc.
        """
        if self.ohem_enabled:
            gt_labels = self._keep_hardest_negatives(pred_objectness_logits, gt_labels)
        losses = super().losses(
            anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes
        )
        if self.bg_weight != 1.0:
            losses["loss_rpn_cls"] = self._weighted_objectness_loss(
                pred_objectness_logits, gt_labels
            )
        return losses

    def _keep_hardest_negatives(
        self, pred_objectness_logits: List[torch.Tensor], gt_labels: List[torch.Tensor]
    ) -> List[torch.Tensor]:
        """Per image, the negative candidates with the highest objectness loss.

        Returns:
            list[Tensor]: new label vectors, shape (sum Hi*Wi*A,) each, unkept negatives -1.
        """
        logits = cat(pred_objectness_logits, dim=1).detach()  # (N, sum Hi*Wi*A)
        kept_labels, kept_losses = [], []
        for logits_i, labels_i in zip(logits, gt_labels):
            # The loss each anchor would have as a negative: BCE against target 0.
            negative_losses = F.binary_cross_entropy_with_logits(
                logits_i, torch.zeros_like(logits_i), reduction="none"
            )
            quota = rpn_negative_quota(
                int((labels_i == 1).sum()),
                self.batch_size_per_image,
                self.ohem_neg_pos_ratio,
                self.ohem_min_negatives,
            )
            labels_i = keep_hardest_negatives(labels_i, negative_losses, quota)
            kept_labels.append(labels_i)
            kept_losses.append(negative_losses[labels_i == 0])
        self._log_ohem(kept_losses)
        return kept_labels

    def _log_ohem(self, kept_losses: List[torch.Tensor]):
        storage = get_event_storage()
        storage.put_scalar("hnm/rpn_ohem_neg", float(np.mean([len(k) for k in kept_losses])))
        all_kept = cat(kept_losses)
        if all_kept.numel():
            storage.put_scalar("hnm/rpn_ohem_neg_loss_mean", all_kept.mean().item())

    def _weighted_objectness_loss(
        self, pred_objectness_logits: List[torch.Tensor], gt_labels: List[torch.Tensor]
    ) -> torch.Tensor:
        """Objectness loss with background terms times ``bg_weight``, stock normaliser."""
        labels = torch.stack(gt_labels)  # (N, sum Hi*Wi*A)
        valid = labels >= 0
        logits = cat(pred_objectness_logits, dim=1)[valid]
        loss_sum = objectness_losses(logits, labels[valid], self.bg_weight).sum()
        # The stock normaliser: the anchors sampled per image times the images, whatever the
        # weights, so the positive terms keep their stock scale.
        normalizer = self.batch_size_per_image * len(gt_labels)
        return loss_sum / normalizer * self.loss_weight.get("loss_rpn_cls", 1.0)
