"""A loss on each negative image's highest-scored proposals (MODEL.HNM.NEGATIVE_IMAGE_LOSS), the
part of the ROI heads aimed at false alarms per negative image at a matched recall.

That measure counts, on each negative image, the boxes scored above the threshold that reaches
the recall: a negative image's few highest-scored boxes decide it. The stock loss averages over
BATCH_SIZE_PER_IMAGE sampled RoIs per image, most of them easy background. Here, for each
training image without objects, every proposal (not only the sampled ones: up to
POST_NMS_TOPK_TRAIN) is scored by the box head without gradients, with the score the buffer
keeps (:mod:`.hard_negatives`: the highest object-class probability, softmax or sigmoid, what
inference compares with SCORE_THRESH_TEST), and the TOP_K highest are pooled again with
gradients. They add a term beside the stock losses, which stay as they are:

    loss_neg_topk = WEIGHT * (sum over the chosen RoIs of their cross-entropy toward background)
                           / (number of chosen RoIs in the batch)

Normaliser: the RoIs chosen in the batch (TOP_K per negative image, fewer on an image with fewer
proposals), so the term is a per-RoI cross-entropy whatever the batch's share of negative
images. A batch without a negative image gives 0, still tied to the graph: every process logs
the same loss keys, which detectron2 averages across processes by name.

Cost: a no-gradient pass of the box head over each negative image's proposals, then a pass with
gradients over its TOP_K (measured: docs/BENCHMARKS.md). Pooling the chosen RoIs a second time,
rather than indexing a pooling of every proposal with gradients, is OHEM's choice for OHEM's
reason: ROIAlign's backward costs in proportion to every RoI pooled, gradient or not.

Refused with a cascade (HNMCascadeROIHeads): its three box predictors score a box together
(inference averages their probabilities on boxes each stage refines), so which stage scores the
proposals and which learns from the chosen ones are open design choices, and scoring every
proposal through the stages would cost a pass per stage; not built until measured worth it.
"""

from typing import Dict, List, Optional

import torch
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from ..compat import uses_sigmoid_ce
from ..config import HNMConfigError, check_arguments
from .hard_negatives import HardNegativePicking
from .losses import background_cross_entropy

__all__ = ["ROIHeadsNegativeTopK", "top_scored"]


def top_scored(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the ``k`` highest of ``scores`` (R,), highest first; all R when fewer."""
    return scores.topk(min(k, len(scores))).indices


class ROIHeadsNegativeTopK(HardNegativePicking):
    """Mixin of :class:`~hnm_d2.modeling.roi_heads.HNMROIHeads`: the negative-image top-k loss.

    It takes its own constructor arguments and passes the others on, and wraps the heads'
    ``forward`` (the one place that sees the proposals before sampling and returns the losses),
    so the heads compose it by inheritance alone.
    """

    def __init__(
        self,
        *,
        negative_image_topk: Optional[int] = None,
        negative_image_loss_weight: float = 1.0,
        **kwargs,
    ):
        """
        Args:
            negative_image_topk (int or None): TOP_K, the proposals of each negative image the
                loss trains on; None = no such loss (MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED off).
            negative_image_loss_weight (float): WEIGHT, multiplies ``loss_neg_topk``.
            kwargs: the other arguments of the heads.
        """
        check_arguments(
            type(self).__name__,
            {
                "MODEL.HNM.NEGATIVE_IMAGE_LOSS.TOP_K": ("negative_image_topk", negative_image_topk),
                "MODEL.HNM.NEGATIVE_IMAGE_LOSS.WEIGHT": (
                    "negative_image_loss_weight",
                    negative_image_loss_weight,
                ),
            },
        )
        super().__init__(**kwargs)
        self.negative_image_topk = negative_image_topk
        self.negative_image_loss_weight = negative_image_loss_weight
        if negative_image_topk is not None:
            self._check_negative_image_loss_supported()

    @classmethod
    def _negative_image_loss_args(cls, cfg):
        loss = cfg.MODEL.HNM.NEGATIVE_IMAGE_LOSS
        if not loss.ENABLED:
            return {}
        return {"negative_image_topk": loss.TOP_K, "negative_image_loss_weight": loss.WEIGHT}

    def _check_negative_image_loss_supported(self):
        """Refuse heads with more than one box predictor (a cascade; see the module docstring)."""
        predictors = self._box_predictors()
        if len(predictors) != 1:
            raise HNMConfigError(
                "MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED (negative_image_topk) is not supported by "
                f"{type(self).__name__}, which has {len(predictors)} box predictors (a cascade): "
                "which stage scores a negative image's proposals and which learns from them is "
                "not decided. Use MODEL.ROI_HEADS.NAME 'HNMROIHeads', or set "
                "MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED False."
            )

    def forward(self, images, features: Dict[str, torch.Tensor], proposals, targets=None):
        """The heads' forward; in training with the loss on, plus ``loss_neg_topk`` over the
        proposals of the images without objects, all of them, as the RPN gave them."""
        if not self.training or self.negative_image_topk is None:
            return super().forward(images, features, proposals, targets)
        # Taken before the stock forward, which asserts that training has targets. One entry
        # per image, as the box pooler pairs them with the batch's feature maps: an image with
        # objects has none of its proposals in it.
        negatives = [p if len(t) == 0 else p[:0] for p, t in zip(proposals, targets or [])]
        results, losses = super().forward(images, features, proposals, targets)
        losses["loss_neg_topk"] = self._negative_image_loss(features, negatives)
        return results, losses

    def _negative_image_loss(self, features: Dict[str, torch.Tensor], negatives: List[Instances]):
        """WEIGHT times the mean cross-entropy toward background of the chosen proposals (see the
        module docstring); a zero tied to the graph when there are none."""
        chosen = self._top_scored_proposals(features, negatives)
        if sum(len(c) for c in chosen) == 0:
            return features[self.box_in_features[0]].sum() * 0.0
        class_logits = self._last_stage_class_logits(features, chosen)
        losses = background_cross_entropy(class_logits, uses_sigmoid_ce(self.box_predictor))
        return self.negative_image_loss_weight * losses.mean()

    @torch.no_grad()
    def _top_scored_proposals(
        self, features: Dict[str, torch.Tensor], negatives: List[Instances]
    ) -> List[Instances]:
        """Per image, the TOP_K of its ``negatives`` entry by object score (none for an image
        with objects); hnm/neg_topk_* scalars: negative images per batch, mean chosen score.

        Args:
            negatives (list[Instances]): per image of the batch, the proposals of a negative
                image, or none.
        """
        num_proposals = [len(p) for p in negatives]
        storage = get_event_storage()
        storage.put_scalar("hnm/neg_topk_images", sum(n > 0 for n in num_proposals))
        if sum(num_proposals) == 0:
            return []
        scores = self._object_scores(self._last_stage_class_logits(features, negatives))
        per_image = scores.split(num_proposals)
        keep = [top_scored(s, self.negative_image_topk) for s in per_image]
        kept_scores = torch.cat([s[k] for s, k in zip(per_image, keep)])
        storage.put_scalar("hnm/neg_topk_score", kept_scores.mean().item())
        return [p[k] for p, k in zip(negatives, keep)]
