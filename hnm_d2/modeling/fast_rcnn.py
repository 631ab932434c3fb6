"""The box predictor of HNMROIHeads: stock FastRCNNOutputLayers plus background down-weighting,
an optional softmax focal loss, and the per-RoI loss that OHEM ranks by; and
:func:`hnm_predictor_replacing`, with which the heads swap it in for the stock predictor.
"""

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.structures import Instances

from ..compat import uses_sigmoid_ce
from ..config import HNMConfigError, check_arguments, validate_hnm_config
from .losses import roi_box_regression_losses, roi_classification_losses

__all__ = ["HNMFastRCNNOutputLayers", "hnm_predictor_replacing"]


class HNMFastRCNNOutputLayers(FastRCNNOutputLayers):
    """FastRCNNOutputLayers whose classification loss can down-weight background RoIs and
    focus on hard ones (softmax focal loss).

    ``loss_cls = sum_i w_i * l_i / R``: ``l_i`` the cross-entropy (or focal loss) of RoI i,
    ``w_i`` = MODEL.HNM.ROI_BG_WEIGHT for background RoIs and 1 for the others, R the number
    of RoIs, the stock normaliser. Keeping R (rather than sum_i w_i) leaves the foreground
    terms at their stock scale, and weight 1.0 without focal loss is the stock loss itself
    (``super().losses()`` untouched). ``loss_box_reg`` is always the stock one.
    """

    @configurable
    def __init__(self, *, bg_weight: float = 1.0, focal_gamma: Optional[float] = None, **kwargs):
        """
        Args:
            bg_weight (float): multiplies the classification loss of background RoIs.
            focal_gamma (float or None): None = cross-entropy; else the softmax focal loss
                with this gamma (0 = cross-entropy, recomputed).
            kwargs: the arguments of :class:`FastRCNNOutputLayers` (``input_shape`` included).
        """
        check_arguments(
            type(self).__name__,
            {
                "MODEL.HNM.ROI_BG_WEIGHT": ("bg_weight", bg_weight),
                "MODEL.HNM.ROI_FOCAL.GAMMA": ("focal_gamma", focal_gamma),
            },
        )
        super().__init__(**kwargs)
        self.bg_weight = bg_weight
        self.focal_gamma = focal_gamma
        if uses_sigmoid_ce(self) and not self.uses_stock_classification_loss:
            raise HNMConfigError(
                "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE (use_sigmoid_ce=True) cannot be combined with "
                "MODEL.HNM.ROI_BG_WEIGHT != 1 (bg_weight) or MODEL.HNM.ROI_FOCAL.ENABLED "
                "(focal_gamma): they reweight the softmax cross-entropy. Turn one of them off."
            )

    @classmethod
    def from_config(cls, cfg, input_shape):
        validate_hnm_config(cfg, prefix="MODEL.HNM")
        ret = super().from_config(cfg, input_shape)
        ret["bg_weight"] = cfg.MODEL.HNM.ROI_BG_WEIGHT
        ret["focal_gamma"] = (
            cfg.MODEL.HNM.ROI_FOCAL.GAMMA if cfg.MODEL.HNM.ROI_FOCAL.ENABLED else None
        )
        return ret

    @property
    def uses_stock_classification_loss(self) -> bool:
        return self.bg_weight == 1.0 and self.focal_gamma is None

    def losses(self, predictions, proposals: List[Instances]) -> Dict[str, torch.Tensor]:
        """Stock losses, with ``loss_cls`` replaced when down-weighting or focal loss is on.

        Args:
            predictions: (scores (R, K + 1), deltas (R, K * 4)), from :meth:`forward`.
            proposals (list[Instances]): with fields proposal_boxes, gt_classes (and gt_boxes).

        Returns:
            dict: loss_cls, loss_box_reg.
        """
        losses = super().losses(predictions, proposals)
        if self.uses_stock_classification_loss:
            return losses
        scores, _ = predictions
        gt_classes = _gt_classes(proposals, scores.device)
        per_roi = roi_classification_losses(scores, gt_classes, self.bg_weight, self.focal_gamma)
        # Divided by the number of RoIs like the stock cross-entropy's mean (0 without RoIs).
        loss_cls = per_roi.sum() / max(gt_classes.numel(), 1)
        losses["loss_cls"] = loss_cls * self.loss_weight.get("loss_cls", 1.0)
        return losses

    def classification_losses(self, scores: torch.Tensor, gt_classes: torch.Tensor):
        """Each RoI's classification loss, as :meth:`losses` sums it before its division:
        cross-entropy or focal loss, background terms weighted.

        Args:
            scores (Tensor): (R, K + 1) class logits; gt_classes (R,) int64 in [0, K].

        Returns:
            Tensor: shape (R,).
        """
        return roi_classification_losses(scores, gt_classes, self.bg_weight, self.focal_gamma)

    def per_roi_losses(
        self, predictions: Tuple[torch.Tensor, torch.Tensor], proposals: List[Instances]
    ) -> torch.Tensor:
        """What each RoI adds to ``losses()`` before the division by the number of RoIs.

        ``loss_weight["loss_cls"] * l_cls_i + loss_weight["loss_box_reg"] * l_box_i`` with the
        same classification loss as :meth:`losses` (background weight and focal loss
        included) and the smooth-L1 loss of the class-specific deltas (foreground only).
        OHEM ranks RoIs by it.

        Args:
            predictions: (scores (R, K + 1), deltas (R, K * 4) or (R, 4)).
            proposals (list[Instances]): the R proposals, fields proposal_boxes, gt_classes
                and, in images with objects, gt_boxes.

        Returns:
            Tensor: shape (R,).
        """
        scores, deltas = predictions
        gt_classes = _gt_classes(proposals, scores.device)
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals])
        # Background-only images have no gt_boxes; their placeholder is never read.
        gt_boxes = cat(
            [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals]
        )
        cls_losses = self.classification_losses(scores, gt_classes)
        box_losses = roi_box_regression_losses(
            deltas,
            proposal_boxes,
            gt_boxes,
            gt_classes,
            self.num_classes,
            self.box2box_transform,
            self.smooth_l1_beta,
        )
        return cls_losses * self.loss_weight.get(
            "loss_cls", 1.0
        ) + box_losses * self.loss_weight.get("loss_box_reg", 1.0)


def hnm_predictor_replacing(cfg, stock_predictor, input_shape, **kwargs):
    """An :class:`HNMFastRCNNOutputLayers` with the weights of ``stock_predictor``.

    The stock predictor has drawn its initial weights already. The replacement is drawn with
    the random state restored afterwards, then given those weights: a seeded build of an hnm_d2
    model consumes the random numbers a seeded stock build does, so its initial weights, RoI
    and anchor sampling and data order after it are stock detectron2's. (Models are built on
    the CPU before moving to MODEL.DEVICE: the CPU state is the one.)

    Args:
        kwargs: arguments that override the config's (a cascade stage's box2box_transform).
    """
    with torch.random.fork_rng(devices=[]):
        predictor = HNMFastRCNNOutputLayers(cfg, input_shape, **kwargs)
    predictor.load_state_dict(stock_predictor.state_dict())
    return predictor


def _gt_classes(proposals: List[Instances], device) -> torch.Tensor:
    """The gt_classes of all proposals, shape (R,)."""
    if not proposals:
        return torch.empty(0, dtype=torch.int64, device=device)
    return cat([p.gt_classes for p in proposals])
