"""Injected background in the heads: which images the batch holds, their negative boxes and
buffered boxes injected as background proposals, and the hard negatives the buffer
(MODEL.HNM.BUFFER) records after the box branch has run.

Background proposals the box head scored as objects (:mod:`.hard_negatives`) are stored per
image file (:class:`HardNegativeBuffer`, original image coordinates) and come back as extra
background proposals when the image is sampled again. Without OHEM they are guaranteed BG_SHARE
of the image's background quota; with OHEM they simply join the candidates that OHEM ranks (a
box still hard is kept by its loss, one no longer hard is not forced in).

An image's negative boxes (a person's "looks like an object, and is not",
:mod:`hnm_d2.data.negative_boxes`; no config key, on when the inputs carry them) take the same
path, first and whatever the buffer's settings: without OHEM they get as much of the image's
background quota as they need, every time the image is seen; with OHEM they join the
candidates as the buffered boxes do.
"""

import contextlib
import math
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from detectron2.layers import cat
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage

from ..data.negative_boxes import NEGATIVE_BOXES
from .buffer import HardNegativeBuffer, image_key
from .hard_negatives import HardNegativePicking

__all__ = ["ImageVisit", "ROIHeadsBuffer"]


# The objectness logit of an injected negative box: that of a certain box, as stock gives the
# gt boxes it appends to the proposals. Nothing reads it in training; Instances.cat needs it.
_CERTAIN_LOGIT = math.log((1.0 - 1e-10) / 1e-10)


class ImageVisit(NamedTuple):
    """The images of the current training batch, as HNMRCNN passes them to the heads.

    Attributes:
        negative_boxes (list[Boxes or None]): per image, its negative boxes in this visit's
            coordinates; None for an input without the field.
        file_names (list[str] or None): with the buffer on, the image file of each image: its
            identity across datasets (separate COCO files all number their images from 1, so
            an id alone can clash).
        keys (list[int] or None): with the buffer on, the buffer key of each image
            (:func:`image_key` of its file name).
        transforms (list[TransformList] or None): with the buffer on, the augmentation applied
            to each image.
        buffered (list[Instances] or None): per image, its buffered boxes that are background
            at this visit (this visit's coordinates), set when the proposals are labelled.
    """

    negative_boxes: List[Optional[Boxes]]
    file_names: Optional[List[str]] = None
    keys: Optional[List[int]] = None
    transforms: Optional[list] = None
    buffered: Optional[List[Instances]] = None


class ROIHeadsBuffer(HardNegativePicking):
    """Mixin of the hnm_d2 ROI heads: the injected background's side of a training step (the
    negative boxes and the box buffer). The heads set ``hard_negative_buffer``,
    ``buffer_bg_share`` and ``hard_negative_max_iou``, and start with ``_visit = None``.

    ``_visit`` carries the batch from :meth:`visiting` (HNMRCNN, which has the inputs) to the
    heads, and this visit's buffered background boxes from
    :meth:`_label_and_sample_with_injected_background` to :meth:`_remember_hard_negatives`:
    stock ``forward`` calls the one, then ``_forward_box``, and hands over neither the inputs
    nor anything but the proposals in between.
    """

    @classmethod
    def _buffer_args(cls, cfg):
        buffer = cfg.MODEL.HNM.BUFFER
        if not buffer.ENABLED:
            return {}
        return {
            "hard_negative_max_iou": buffer.MAX_OBJECT_IOU,
            "hard_negative_buffer": HardNegativeBuffer(
                capacity=buffer.CAPACITY,
                per_image=buffer.PER_IMAGE,
                max_age=buffer.MAX_AGE,
                dedup_iou=buffer.DEDUP_IOU,
                score_thresh=buffer.SCORE_THRESH,
                warmup_iters=buffer.WARMUP_ITERS,
            ),
            "buffer_bg_share": buffer.BG_SHARE,
        }

    @contextlib.contextmanager
    def visiting(self, batched_inputs: List[Dict]):
        """Tell the heads which images the training batch inside this context holds: with the
        buffer on, or when an input carries negative boxes.

        Args:
            batched_inputs (list[dict]): the model's training inputs; with the buffer on each
                needs "file_name" (the image's identity) and "transforms" (the TransformList
                the mapper applied; :class:`hnm_d2.data.NegativeAwareDatasetMapper` keeps it).
                Any may carry "negative_boxes" (Boxes in the input's coordinates, as that
                mapper outputs them).
        """
        negative_boxes = [_negative_boxes_of(x, k) for k, x in enumerate(batched_inputs)]
        if self.hard_negative_buffer is not None:
            file_names = [_required_input(x, "file_name", k) for k, x in enumerate(batched_inputs)]
            transforms = [_required_input(x, "transforms", k) for k, x in enumerate(batched_inputs)]
            keys = [image_key(f) for f in file_names]
            self._visit = ImageVisit(negative_boxes, file_names, keys, transforms)
        elif any(b is not None for b in negative_boxes):
            self._visit = ImageVisit(negative_boxes)
        try:
            yield
        finally:
            self._visit = None

    def _current_visit(self) -> ImageVisit:
        if self._visit is None:
            raise RuntimeError(
                "MODEL.HNM.BUFFER.ENABLED needs to know which images the training batch holds: "
                "use MODEL.META_ARCHITECTURE 'HNMRCNN' (LazyConfig: model._target_ = HNMRCNN), "
                "or run the forward pass inside roi_heads.visiting(batched_inputs)."
            )
        return self._visit

    def _label_and_sample_with_injected_background(
        self, proposals: List[Instances], targets: List[Instances], label_and_sample: Callable
    ) -> List[Instances]:
        """Stock labelling and sampling (``label_and_sample``), plus each image's injected
        background: its negative boxes, and with the buffer on its buffered hard negatives.

        Args:
            proposals (list[Instances]): per image, fields proposal_boxes, objectness_logits.
            targets (list[Instances]): per image, gt_boxes and gt_classes (maybe empty).
            label_and_sample: the stock ``label_and_sample_proposals``.

        Returns:
            list[Instances]: the training proposals (see the stock method). Without OHEM the
            injected boxes take background slots (:meth:`_inject`); with OHEM they join the
            candidates, labelled by the stock matcher (hnm/negative_boxes_injected and
            hnm/buffer_injected count them per image either way).
        """
        visit = self._current_visit()
        negative = [_negative_proposals(b, p) for b, p in zip(visit.negative_boxes, proposals)]
        buffered = self._buffered_candidates(visit, proposals)
        background = [self._label_background(b, t) for b, t in zip(buffered, targets)]
        if self.hard_negative_buffer is not None:
            # Re-scored after the box head has run, whether trained on or not (see
            # _remember_hard_negatives); a box that now overlaps an object leaves the buffer.
            self._visit = visit._replace(buffered=background)
        if self.ohem_enabled:
            candidates = [
                Instances.cat([p, n, b]) for p, n, b in zip(proposals, negative, buffered)
            ]
            sampled = label_and_sample(candidates, targets)
            counts = [(len(n), len(b)) for n, b in zip(negative, buffered)]
        else:
            sampled = label_and_sample(proposals, targets)
            negative = [self._label_background(n, t) for n, t in zip(negative, targets)]
            sampled, counts = zip(
                *[self._inject(s, n, b) for s, n, b in zip(sampled, negative, background)]
            )
        self._log_injected(visit, counts)
        return list(sampled)

    def _buffered_candidates(self, visit: ImageVisit, proposals: List[Instances]):
        """Per image, its buffered boxes as proposals (none without the buffer)."""
        if self.hard_negative_buffer is None:
            return [p[:0] for p in proposals]
        self.hard_negative_buffer.expire(get_event_storage().iter)
        return [
            self._buffered_proposals(key, tfm, p)
            for key, tfm, p in zip(visit.keys, visit.transforms, proposals)
        ]

    def _log_injected(self, visit: ImageVisit, counts: List[Tuple[int, int]]) -> None:
        """hnm/negative_boxes_injected (when an input carries negative boxes) and
        hnm/buffer_injected (with the buffer on): the boxes injected per image."""
        num_negative, num_buffered = zip(*counts)
        storage = get_event_storage()
        if any(b is not None for b in visit.negative_boxes):
            storage.put_scalar("hnm/negative_boxes_injected", float(np.mean(num_negative)))
        if self.hard_negative_buffer is not None:
            storage.put_scalar("hnm/buffer_injected", float(np.mean(num_buffered)))

    def _buffered_proposals(self, key, transforms, proposals: Instances) -> Instances:
        """The buffered boxes of one image as proposals in this visit's coordinates.

        Returns:
            Instances: fields proposal_boxes and objectness_logits (the logit of the buffered
            score: these boxes come from the box head, not the RPN), best score first.
        """
        boxes, scores = self.hard_negative_buffer.boxes_of(key)
        device = proposals.proposal_boxes.device
        boxes = Boxes(_to_visit(boxes, transforms).to(device))
        boxes.clip(proposals.image_size)
        keep = boxes.nonempty()
        return Instances(
            proposals.image_size,
            proposal_boxes=boxes[keep],
            objectness_logits=torch.logit(scores, eps=1e-6).to(device)[keep],
        )

    def _inject(self, sampled: Instances, negative: Instances, buffered: Instances):
        """Give one image's injected background boxes slots of its background quota B - #fg.

        Its negative boxes first, as many as the quota holds (a person marked each one); then
        its buffered boxes, best first, their BG_SHARE of the quota, floor(BG_SHARE *
        (B - #fg)), within what the negative boxes left. The injected boxes take the free slots
        of a short batch, then replace the last sampled background proposals (the stock sampler
        puts foreground first and background in random order after).

        Returns:
            (Instances, (int, int)): the training proposals of the image; the negative boxes
            and the buffered boxes injected.
        """
        if len(negative) + len(buffered) == 0:
            return sampled, (0, 0)
        num_fg = int((sampled.gt_classes != self.num_classes).sum())
        quota = self.batch_size_per_image - num_fg
        num_negative = min(len(negative), quota)
        num_buffered = min(len(buffered), int(self.buffer_bg_share * quota), quota - num_negative)
        injected = Instances.cat([negative[:num_negative], buffered[:num_buffered]])
        num_free = self.batch_size_per_image - len(sampled)
        num_replaced = max(0, len(injected) - num_free)
        kept = sampled[: len(sampled) - num_replaced]
        return Instances.cat([kept, injected]), (num_negative, num_buffered)

    def _label_background(self, injected: Instances, targets: Instances) -> Instances:
        """Match injected (negative or buffered) boxes to the gt boxes as proposals are
        matched; keep the background.

        A box the matcher does not call background (label 0) overlaps an object enough to be
        one at this visit, so it is left out. The gt_* fields are filled as the stock
        labelling fills them, so the result concatenates with the sampled proposals.
        """
        match_quality = pairwise_iou(targets.gt_boxes, injected.proposal_boxes)
        matched_idxs, matched_labels = self.proposal_matcher(match_quality)
        is_background = matched_labels == 0
        labelled = injected[is_background]
        labelled.gt_classes = torch.full_like(matched_idxs[is_background], self.num_classes)
        if len(targets) > 0:
            for name, value in targets.get_fields().items():
                if name.startswith("gt_") and not labelled.has(name):
                    labelled.set(name, value[matched_idxs[is_background]])
        return labelled

    @torch.no_grad()
    def _rescore_buffered(
        self, features: Dict[str, torch.Tensor], buffered: List[Instances]
    ) -> List[torch.Tensor]:
        """The object scores of this visit's buffered background boxes (``buffered``, per
        image), by the model of this iteration (an extra pass over at most PER_IMAGE boxes per
        image)."""
        class_logits = self._last_stage_class_logits(features, buffered)
        return self._object_scores(class_logits).split([len(b) for b in buffered])

    def _remember_hard_negatives(self, features, proposals: List[Instances], predictions):
        """Replace each image's buffered boxes by the hard negatives of this visit.

        A visit's candidates are the background proposals the box head scored this iteration
        and the image's buffered boxes, re-scored, those clear of objects
        (:meth:`_clear_of_objects`) and apart from its negative boxes (:func:`_apart_from`): the
        hard ones (score >= SCORE_THRESH) become the image's entries, so a buffered box the
        model now gets right leaves. Nothing is recorded during the first WARMUP_ITERS
        iterations, while the untrained model scores every box alike.

        Args:
            features (dict[str, Tensor]): the feature maps of the batch.
            proposals (list[Instances]): the scored proposals of each image (proposal_boxes,
                gt_classes), this visit's coordinates.
            predictions (tuple[Tensor, Tensor]): the box predictor's outputs on them.
        """
        buffer, iteration = self.hard_negative_buffer, get_event_storage().iter
        if iteration < buffer.warmup_iters:
            return
        visit = self._current_visit()
        scores = self._object_scores(predictions[0]).split([len(p) for p in proposals])
        rescored = self._rescore_buffered(features, visit.buffered)
        for k, (p, s) in enumerate(zip(proposals, scores)):
            buffered, marked = visit.buffered[k], visit.negative_boxes[k]
            is_new, is_kept = self._storable(p, marked), self._storable(buffered, marked)
            boxes = cat([p.proposal_boxes.tensor[is_new], buffered.proposal_boxes.tensor[is_kept]])
            original = _to_original(boxes.detach().cpu(), visit.transforms[k], visit.file_names[k])
            scored = cat([s[is_new], rescored[k][is_kept]])
            buffer.record_visit(visit.keys[k], original, scored, iteration)
        storage = get_event_storage()
        storage.put_scalar("hnm/buffer_size", buffer.num_entries)
        storage.put_scalar("hnm/buffer_mean_score", buffer.mean_score())

    def _storable(self, rois: Instances, negative_boxes: Optional[Boxes]) -> torch.Tensor:
        """Which labelled RoIs of one image the buffer may store: clear of objects and apart
        from the image's negative boxes."""
        apart = _apart_from(
            rois.proposal_boxes, negative_boxes, self.hard_negative_buffer.dedup_iou
        )
        return self._clear_of_objects(rois) & apart


def _required_input(batched_input: Dict, field: str, index: int):
    """A field the hard-negative buffer needs from a training input, or a clear error."""
    if field not in batched_input:
        raise ValueError(
            f"Training input {index} (file {batched_input.get('file_name', '?')}, image id "
            f"{batched_input.get('image_id', '?')}) has no {field!r}: MODEL.HNM.BUFFER.ENABLED "
            "keys boxes by the image file and stores them in original image coordinates. Map "
            "the data with hnm_d2.data.NegativeAwareDatasetMapper (hnm_d2.data."
            "build_hnm_train_loader does), or keep 'file_name' and put the TransformList your "
            "mapper applied under 'transforms'; or turn MODEL.HNM.BUFFER.ENABLED off."
        )
    return batched_input[field]


def _negative_boxes_of(batched_input: Dict, index: int) -> Optional[Boxes]:
    """The negative boxes of a training input (None when it has none), or a clear error when
    they are not in its coordinates."""
    boxes = batched_input.get(NEGATIVE_BOXES)
    if boxes is None or isinstance(boxes, Boxes):
        return boxes
    raise ValueError(
        f"Training input {index} (file {batched_input.get('file_name', '?')}, image id "
        f"{batched_input.get('image_id', '?')}) has {NEGATIVE_BOXES!r} as a "
        f"{type(boxes).__name__}, not Boxes: the dataset dict's boxes (original image "
        "coordinates) were not transformed with the image. Map the data with "
        "hnm_d2.data.NegativeAwareDatasetMapper (hnm_d2.data.build_hnm_train_loader does), "
        "or put Boxes in the input image's coordinates there."
    )


def _apart_from(boxes: Boxes, negative_boxes: Optional[Boxes], max_iou: float) -> torch.Tensor:
    """Which of ``boxes`` overlap none of an image's ``negative_boxes`` by more than ``max_iou``
    (the buffer's DEDUP_IOU: past it the buffer would merge the two). A negative box is injected
    at every visit of its image already; stored in the buffer too, the same region would come
    back twice in one batch.

    Returns:
        Tensor: bool, shape (len(boxes),).
    """
    if negative_boxes is None or len(negative_boxes) == 0 or len(boxes) == 0:
        return torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    overlap = pairwise_iou(boxes, negative_boxes.to(boxes.device))
    return overlap.max(dim=1).values <= max_iou


def _negative_proposals(negative_boxes: Optional[Boxes], proposals: Instances) -> Instances:
    """One image's negative boxes as proposals (fields of ``proposals``; none when None)."""
    if negative_boxes is None:
        return proposals[:0]
    logits = proposals.objectness_logits
    return Instances(
        proposals.image_size,
        proposal_boxes=negative_boxes.to(logits.device),
        objectness_logits=torch.full(
            (len(negative_boxes),), _CERTAIN_LOGIT, dtype=logits.dtype, device=logits.device
        ),
    )


def _to_original(boxes: torch.Tensor, transforms, file_name) -> torch.Tensor:
    """Map XYXY boxes (n, 4) of an augmented image back to the original image."""
    if len(boxes) == 0:
        return boxes
    try:
        inverse = transforms.inverse()
    except (AssertionError, NotImplementedError) as e:
        raise ValueError(
            f"Image {file_name}: the hard-negative buffer stores boxes in original image "
            f"coordinates, but the training transforms {transforms} cannot be inverted ({e}). "
            "Use invertible augmentations (e.g. a CropTransform with orig_w/orig_h) or turn "
            "MODEL.HNM.BUFFER.ENABLED off."
        ) from e
    return torch.as_tensor(inverse.apply_box(boxes.numpy()), dtype=torch.float32)


def _to_visit(boxes: torch.Tensor, transforms) -> torch.Tensor:
    """Map XYXY boxes (n, 4) of the original image into an augmented visit of it."""
    if len(boxes) == 0:
        return boxes
    return torch.as_tensor(transforms.apply_box(boxes.numpy()), dtype=torch.float32)
