"""HNMRCNN: GeneralizedRCNN that tells its ROI heads which images a training batch holds."""

from typing import Dict, List

from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from ..config import validate_hnm_config
from ..key_check import check_hnm_keys_are_used
from .roi_heads import HNMROIHeads

__all__ = ["HNMRCNN"]


@META_ARCH_REGISTRY.register()
class HNMRCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose training forward hands the batch's inputs to
    :class:`HNMROIHeads` (the hard-negative buffer keys its boxes by image file and stores them
    in original image coordinates; an input's negative boxes are trained as background).
    Everything else is the stock model.
    """

    @classmethod
    def from_config(cls, cfg):
        validate_hnm_config(cfg, prefix="MODEL.HNM")
        check_hnm_keys_are_used(cfg)
        return super().from_config(cfg)

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs (list[dict]): as for GeneralizedRCNN; with the buffer on, each
                training input also needs "file_name" and "transforms" (the TransformList the
                mapper applied), as NegativeAwareDatasetMapper outputs them; any may carry
                "negative_boxes" (Boxes in its coordinates, as that mapper outputs them).

        Returns:
            see :meth:`GeneralizedRCNN.forward`.
        """
        # Other heads ignore the inputs' negative boxes, as a stock GeneralizedRCNN does and as
        # detectron2 ignores the keypoints of its data with MODEL.KEYPOINT_ON off: a field of the
        # data no part of the model reads, so that a stock baseline trains on the same data.
        if not self.training or not isinstance(self.roi_heads, HNMROIHeads):
            return super().forward(batched_inputs)
        with self.roi_heads.visiting(batched_inputs):
            return super().forward(batched_inputs)
