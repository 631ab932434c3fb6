"""What the box buffer and the feature memory share: which labelled RoIs may be stored as hard
negatives, and the score they are stored with.

A hard negative is a background RoI, clear of every object, that the box predictor scores as a
detection: its highest object-class probability (the score inference compares with
MODEL.ROI_HEADS.SCORE_THRESH_TEST) is at least the store's SCORE_THRESH.
"""

from typing import Dict, List

import torch
from detectron2.structures import Instances
from detectron2.structures.boxes import matched_pairwise_iou
from torch.nn import functional as F

from ..compat import uses_sigmoid_ce

__all__ = ["HardNegativePicking", "object_scores", "clear_of_objects"]


def object_scores(class_logits: torch.Tensor, use_sigmoid_ce: bool) -> torch.Tensor:
    """Each RoI's highest object-class probability, as the predictor's ``predict_probs`` has it
    (softmax over the K + 1 classes, or a sigmoid per class).

    Args:
        class_logits (Tensor): (R, K + 1), the predictor's class scores.
        use_sigmoid_ce (bool): the predictor's MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE.

    Returns:
        Tensor: (R,), detached.
    """
    if use_sigmoid_ce:
        probs = class_logits.sigmoid()
    else:
        probs = F.softmax(class_logits, dim=-1)
    return probs[:, :-1].max(dim=1).values.detach()


def clear_of_objects(rois: Instances, background_class: int, max_iou: float) -> torch.Tensor:
    """Which labelled RoIs are background and overlap no object by ``max_iou`` or more. (A
    background RoI's gt_boxes is the object it overlaps most; an image without objects has none.)

    Args:
        rois (Instances): fields proposal_boxes, gt_classes and, with objects, gt_boxes.
        background_class (int): the label of background (the number of classes).
        max_iou (float): the IoU with an object from which a RoI is not stored.

    Returns:
        Tensor: bool, shape (len(rois),).
    """
    is_background = rois.gt_classes == background_class
    if not rois.has("gt_boxes") or len(rois) == 0:
        return is_background
    overlap = matched_pairwise_iou(rois.gt_boxes, rois.proposal_boxes)
    return is_background & (overlap < max_iou)


class HardNegativePicking:
    """Mixin of the hnm_d2 ROI heads: :func:`object_scores` and :func:`clear_of_objects` with the
    heads' settings (``hard_negative_max_iou``, the proposal matcher, the last box predictor)."""

    def _last_stage_class_logits(self, features: Dict[str, torch.Tensor], rois: List[Instances]):
        """The class logits (R, K + 1) of the box predictor (a cascade's last, which the cascade
        heads override) on the proposal_boxes of ``rois``."""
        boxes = [r.proposal_boxes for r in rois]
        pooled = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        class_logits, _ = self.box_predictor(self.box_head(pooled))
        return class_logits

    def _object_scores(self, class_logits: torch.Tensor) -> torch.Tensor:
        """:func:`object_scores` as the last stage's predictor computes them at inference."""
        return object_scores(class_logits, uses_sigmoid_ce(self._box_predictors()[-1]))

    def _clear_of_objects(self, rois: Instances) -> torch.Tensor:
        """Which labelled RoIs may be stored as hard negatives: background, overlapping no
        object by ``hard_negative_max_iou`` or more, nor by the proposal matcher's foreground
        IoU.

        The matcher's bound matters in a cascade: its later stages label background below a
        stricter IoU (0.7), but a stored box comes back as a proposal, which this matcher (0.5)
        would call foreground.

        Returns:
            Tensor: bool, shape (len(rois),).
        """
        # Matcher.thresholds is [-inf, foreground IoU, inf] for the heads' two labels.
        limit = min(self.hard_negative_max_iou, self.proposal_matcher.thresholds[1])
        return clear_of_objects(rois, self.num_classes, limit)
