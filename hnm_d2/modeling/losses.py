"""Per-example loss math of the heads: background-weighted and focal classification, per-RoI
box regression. Tensors in, tensors out; every function returns one loss per example
(``reduction="none"``) so that the caller states its own normaliser.
"""

import torch
from fvcore.nn import smooth_l1_loss
from torch.nn import functional as F

__all__ = [
    "background_weights",
    "softmax_focal_loss",
    "roi_classification_losses",
    "background_cross_entropy",
    "objectness_losses",
    "roi_box_regression_losses",
]


def background_weights(labels: torch.Tensor, bg_label: int, bg_weight: float) -> torch.Tensor:
    """Per-example weights: ``bg_weight`` for background examples, 1 for the others.

    Args:
        labels (Tensor): int64, shape (R,).
        bg_label (int): the background label (K for the RoI classifier, 0 for the RPN).
        bg_weight (float): weight of a background term.

    Returns:
        Tensor: float32, shape (R,).
    """
    weights = torch.ones(labels.shape, dtype=torch.float32, device=labels.device)
    return weights.masked_fill(labels == bg_label, bg_weight)


def softmax_focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Softmax focal loss (Lin et al. 2017): ``-(1 - p_t) ** gamma * log(p_t)`` per example.

    With ``gamma == 0`` this is the softmax cross-entropy.

    Args:
        logits (Tensor): shape (R, K + 1), class scores (background last).
        labels (Tensor): int64, shape (R,), in [0, K].
        gamma (float): focusing parameter >= 0.

    Returns:
        Tensor: shape (R,), the loss of each example.
    """
    log_p_t = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    # 1 - p_t, floored at the smallest normal float: where p_t rounds to 1, x ** gamma with
    # 0 < gamma < 1 has an infinite derivative at x = 0, and inf * 0 would make the gradient
    # NaN. Below the floor clamp passes no gradient: the true gradient tends to 0 there.
    # x ** 0 is 1 for every x, so gamma 0 gives back the cross-entropy.
    one_minus_p_t = (-torch.expm1(log_p_t)).clamp(min=torch.finfo(logits.dtype).tiny)
    return -(one_minus_p_t**gamma) * log_p_t


def roi_classification_losses(
    logits: torch.Tensor, labels: torch.Tensor, bg_weight: float, focal_gamma=None
) -> torch.Tensor:
    """Per-RoI classification loss: cross-entropy or focal loss, background terms weighted.

    Args:
        logits (Tensor): shape (R, K + 1), background last.
        labels (Tensor): int64, shape (R,), in [0, K] (K = background).
        bg_weight (float): multiplies the loss of background RoIs.
        focal_gamma (float or None): None = cross-entropy, else the focal loss' gamma.

    Returns:
        Tensor: shape (R,).
    """
    if focal_gamma is None:
        losses = F.cross_entropy(logits, labels, reduction="none")
    else:
        losses = softmax_focal_loss(logits, labels, focal_gamma)
    return losses * background_weights(labels, logits.shape[1] - 1, bg_weight)


def background_cross_entropy(logits: torch.Tensor, use_sigmoid_ce: bool) -> torch.Tensor:
    """Per-RoI cross-entropy toward background, as the box predictor's stock classification
    loss has it for a background RoI: the softmax cross-entropy of class K, or with sigmoid
    cross-entropy the binary cross-entropy of every object class toward 0, summed over them.

    Args:
        logits (Tensor): shape (R, K + 1), background last.
        use_sigmoid_ce (bool): the predictor's MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE.

    Returns:
        Tensor: shape (R,).
    """
    if use_sigmoid_ce:
        object_logits = logits[:, :-1]
        zeros = torch.zeros_like(object_logits)
        losses = F.binary_cross_entropy_with_logits(object_logits, zeros, reduction="none")
        return losses.sum(dim=1)
    background = torch.full(logits.shape[:1], logits.shape[1] - 1, device=logits.device)
    return F.cross_entropy(logits, background, reduction="none")


def objectness_losses(logits: torch.Tensor, labels: torch.Tensor, bg_weight: float):
    """Per-anchor RPN objectness loss (binary cross-entropy), background terms weighted.

    Args:
        logits (Tensor): shape (A,), objectness logits of sampled anchors.
        labels (Tensor): shape (A,), 1 = object, 0 = background (no ignored anchors).
        bg_weight (float): multiplies the loss of background anchors.

    Returns:
        Tensor: shape (A,).
    """
    losses = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return losses * background_weights(labels, 0, bg_weight)


def roi_box_regression_losses(
    pred_deltas: torch.Tensor,
    proposal_boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    box2box_transform,
    beta: float,
) -> torch.Tensor:
    """Per-RoI smooth-L1 box loss on the deltas of the RoI's own class; 0 for background.

    Summed over the 4 coordinates, as detectron2's ``box_reg_loss`` sums them before it
    divides by the number of RoIs.

    Args:
        pred_deltas (Tensor): shape (R, K * 4) class-specific or (R, 4) class-agnostic.
        proposal_boxes (Tensor): shape (R, 4), XYXY proposals.
        gt_boxes (Tensor): shape (R, 4), the matched gt box of each proposal (read for
            foreground RoIs only).
        labels (Tensor): int64, shape (R,), in [0, K] (K = background).
        num_classes (int): K.
        box2box_transform (Box2BoxTransform): the predictor's delta encoding.
        beta (float): smooth-L1 transition point (0 = L1).

    Returns:
        Tensor: shape (R,).
    """
    box_dim = proposal_boxes.shape[1]
    # Deltas are only encoded for foreground RoIs: a background RoI's placeholder gt box may
    # be degenerate, and its log-size delta would be infinite.
    fg = torch.nonzero((labels >= 0) & (labels < num_classes)).squeeze(1)
    if pred_deltas.shape[1] > box_dim:  # class-specific: the deltas of the RoI's class
        fg_pred_deltas = pred_deltas.view(-1, num_classes, box_dim)[fg, labels[fg]]
    else:
        fg_pred_deltas = pred_deltas[fg]
    fg_target_deltas = box2box_transform.get_deltas(proposal_boxes[fg], gt_boxes[fg])
    fg_losses = smooth_l1_loss(fg_pred_deltas, fg_target_deltas, beta=beta, reduction="none")
    losses = pred_deltas.new_zeros(labels.shape)
    return losses.index_put((fg,), fg_losses.sum(dim=1))
