"""Online hard example selection (Shrivastava et al., CVPR 2016) as tensor -> tensor functions.

The heads compute per-example losses without gradients; these functions decide which examples
the backward pass sees. They hold no state and know nothing about detectron2's structures, so
they are tested on hand-built tensors.
"""

import torch
from torchvision.ops import nms

__all__ = ["select_hard_rois", "rpn_negative_quota", "keep_hardest_negatives"]


def _suppress_by_loss(losses: torch.Tensor, boxes: torch.Tensor, nms_thresh: float):
    """Greedy NMS over the loss ranking: a RoI overlapping a higher-loss RoI is dropped.

    Without it, the top-B would be filled by near-copies of the few hardest regions (the
    paper's "co-located RoIs with high overlap are likely to have correlated losses").

    Args:
        losses (Tensor): shape (R,), the per-RoI loss.
        boxes (Tensor): shape (R, 4), XYXY boxes of the RoIs.
        nms_thresh (float): IoU above which the lower-loss RoI is suppressed; 1.0 keeps all.

    Returns:
        Tensor: int64 indices of the surviving RoIs, shape (S,), in decreasing loss order.
    """
    if nms_thresh >= 1.0:
        # IoU never exceeds 1: nothing would be suppressed, only sorted.
        return torch.argsort(losses, descending=True)
    return nms(boxes.float(), losses.float(), nms_thresh)


def select_hard_rois(
    losses: torch.Tensor,
    boxes: torch.Tensor,
    is_foreground: torch.Tensor,
    batch_size: int,
    nms_thresh: float,
    min_positive_fraction: float = 0.0,
) -> torch.Tensor:
    """The RoIs of one image that OHEM back-propagates through.

    Steps: NMS over the loss ranking (``nms_thresh``), then a reserved share of the B slots
    for the highest-loss foreground survivors (``min_positive_fraction``), then the remaining
    slots by loss among all other survivors, foreground or background alike.

    Args:
        losses (Tensor): shape (R,), per-RoI loss (classification + box regression).
        boxes (Tensor): shape (R, 4), XYXY proposal boxes.
        is_foreground (Tensor): bool, shape (R,), RoIs labelled with an object class.
        batch_size (int): B, the most RoIs kept.
        nms_thresh (float): IoU in (0, 1] for the suppression by loss.
        min_positive_fraction (float): in [0, 1]; floor(fraction * B) slots go to foreground
            RoIs first (fewer if fewer foreground RoIs survive NMS).

    Returns:
        Tensor: int64 indices into the R RoIs, shape (K,) with K <= B, in decreasing loss
        order.
    """
    survivors = _suppress_by_loss(losses, boxes, nms_thresh)
    num_reserved = int(min_positive_fraction * batch_size)
    survivor_is_fg = is_foreground[survivors]
    # Survivors are in decreasing loss order, so the first foreground ones are the hardest.
    reserved = survivors[survivor_is_fg][:num_reserved]
    others = survivors[~torch.isin(survivors, reserved)]
    keep = torch.cat([reserved, others[: batch_size - reserved.numel()]])
    return keep[torch.argsort(losses[keep], descending=True)]


def rpn_negative_quota(
    num_positives: int, batch_size: int, neg_pos_ratio: float, min_negatives: int
) -> int:
    """How many negative anchors an image keeps under RPN OHEM.

    Args:
        num_positives (int): positive anchors sampled in the image.
        batch_size (int): MODEL.RPN.BATCH_SIZE_PER_IMAGE.
        neg_pos_ratio (float): 0 = no cap; else at most ratio * num_positives negatives...
        min_negatives (int): ... but never fewer than this (MODEL.HNM.RPN_OHEM.MIN_NEGATIVES):
            an image with few or no positives (a negative image) must still train the RPN on
            its hardest background.

    Returns:
        int: the number of negatives to keep, in [0, batch_size - num_positives].
    """
    quota = batch_size - num_positives
    if neg_pos_ratio > 0:
        quota = min(quota, max(int(neg_pos_ratio * num_positives), min_negatives))
    return max(quota, 0)


def keep_hardest_negatives(
    labels: torch.Tensor, negative_losses: torch.Tensor, num_keep: int
) -> torch.Tensor:
    """Keep the ``num_keep`` highest-loss negatives of one image; the others become ignored.

    Args:
        labels (Tensor): shape (A,), anchor labels: 1 positive, 0 negative, -1 ignore.
        negative_losses (Tensor): shape (A,), the loss each anchor would have as a negative
            (only the entries of negatives are read).
        num_keep (int): negatives to keep.

    Returns:
        Tensor: a new label vector of shape (A,), the unkept negatives set to -1.
    """
    negatives = torch.nonzero(labels == 0).squeeze(1)
    num_keep = min(num_keep, negatives.numel())
    hardest = negatives[torch.topk(negative_losses[negatives], num_keep).indices]
    labels = torch.where(labels == 0, torch.full_like(labels, -1), labels)
    labels[hardest] = 0
    return labels
