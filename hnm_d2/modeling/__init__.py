"""hnm_d2's detectron2 components; importing this package registers them.

- ``HNMRCNN`` (META_ARCH_REGISTRY): GeneralizedRCNN that tells the ROI heads which image files
  (and their transforms) a training batch holds.
- ``HNMRPN`` (PROPOSAL_GENERATOR_REGISTRY): RPN with OHEM over anchors, background weight.
- ``HNMROIHeads`` (ROI_HEADS_REGISTRY): StandardROIHeads with OHEM over RoIs, the
  hard-negative buffer or the feature memory, predictor ``HNMFastRCNNOutputLayers``
  (background weight, focal loss).
- ``HNMCascadeROIHeads`` (ROI_HEADS_REGISTRY): CascadeROIHeads with OHEM and down-weighting per
  stage, the buffer fed from the last stage.
"""

from .buffer import HardNegativeBuffer, image_key
from .cascade_roi_heads import HNMCascadeROIHeads
from .fast_rcnn import HNMFastRCNNOutputLayers
from .meta_arch import HNMRCNN
from .roi_heads import HNMROIHeads
from .rpn import HNMRPN

__all__ = [
    "HNMRCNN",
    "HNMRPN",
    "HNMROIHeads",
    "HNMCascadeROIHeads",
    "HNMFastRCNNOutputLayers",
    "HardNegativeBuffer",
    "image_key",
]
