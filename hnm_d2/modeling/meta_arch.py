"""HNMRCNN: GeneralizedRCNN that tells its ROI heads which images a training batch holds."""

from typing import Dict, List

from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

from .roi_heads import HNMROIHeads

__all__ = ["HNMRCNN"]


@META_ARCH_REGISTRY.register()
class HNMRCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose training forward hands the image ids and augmentations to
    :class:`HNMROIHeads` (the hard-negative buffer keys its boxes by image and stores them in
    original image coordinates). Everything else is the stock model.
    """

    def forward(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs (list[dict]): as for GeneralizedRCNN; in training each dict may
                also hold "image_id" (int or str) and "transforms" (the TransformList the
                mapper applied; absent = identity).

        Returns:
            see :meth:`GeneralizedRCNN.forward`.
        """
        if not self.training or not isinstance(self.roi_heads, HNMROIHeads):
            return super().forward(batched_inputs)
        image_ids = [x.get("image_id") for x in batched_inputs]
        transforms = [x.get("transforms") for x in batched_inputs]
        with self.roi_heads.visiting(image_ids, transforms):
            return super().forward(batched_inputs)
