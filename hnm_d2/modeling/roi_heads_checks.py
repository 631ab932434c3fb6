"""Build-time refusals of the hnm_d2 ROI heads: what a mechanism cannot train fails when the heads
are built, naming the config key, the constructor argument and the fix.

The heads run these checks in their constructor, so a LazyConfig ``instantiate`` (which never
reads a config) is refused as a yacs ``from_config`` is.
"""

from typing import Dict, Optional

from ..compat import uses_sigmoid_ce
from ..config import HNMConfigError, check_arguments
from .fast_rcnn import HNMFastRCNNOutputLayers

__all__ = ["ROIHeadsChecks", "check_head_arguments"]


def check_head_arguments(
    owner: str,
    *,
    ohem_batch_size_per_image: Optional[int],
    ohem_nms_thresh: float,
    ohem_min_positive_fraction: float,
    buffer_bg_share: float,
    hard_negative_max_iou: float,
    memory_on: bool,
) -> None:
    """Check the heads' own constructor arguments against the ranges of their config keys
    (``hard_negative_max_iou`` is the feature memory's MAX_OBJECT_IOU when ``memory_on``, else
    the buffer's)."""
    store = "FEATURE_MEMORY" if memory_on else "BUFFER"
    check_arguments(
        owner,
        {
            "MODEL.HNM.ROI_OHEM.BATCH_SIZE_PER_IMAGE": (
                "ohem_batch_size_per_image",
                ohem_batch_size_per_image,
            ),
            "MODEL.HNM.ROI_OHEM.NMS_THRESH": ("ohem_nms_thresh", ohem_nms_thresh),
            "MODEL.HNM.ROI_OHEM.MIN_POSITIVE_FRACTION": (
                "ohem_min_positive_fraction",
                ohem_min_positive_fraction,
            ),
            "MODEL.HNM.BUFFER.BG_SHARE": ("buffer_bg_share", buffer_bg_share),
            f"MODEL.HNM.{store}.MAX_OBJECT_IOU": ("hard_negative_max_iou", hard_negative_max_iou),
        },
    )


class ROIHeadsChecks:
    """Mixin of :class:`~hnm_d2.modeling.roi_heads.HNMROIHeads`: the refusals that depend on the
    built heads (their predictors, keypoint head, box-head settings). A subclass with other
    heads (a cascade) overrides what differs."""

    def _check_ohem_supported(self):
        """Refuse, at build time, what ROI OHEM does not train correctly."""
        predictors = self._box_predictors()
        for stage, predictor in enumerate(predictors):
            argument = "box_predictor" if len(predictors) == 1 else f"box_predictors[{stage}]"
            _check_ohem_predictor(predictor, argument)
        _refuse_ohem_with(self._settings_ohem_cannot_train())

    def _settings_ohem_cannot_train(self) -> Dict[str, tuple]:
        """setting -> (is it set, how to turn it off), for the heads' own settings."""
        return {
            "MODEL.KEYPOINT_ON (a keypoint head)": (
                self.keypoint_on,
                "set MODEL.KEYPOINT_ON False",
            ),
            "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": (self.train_on_pred_boxes, "set it False"),
        }

    def _check_memory_supported(self):
        """Refuse, at build time, a predictor whose loss the memory cannot add to."""
        predictor = self.box_predictor
        if not isinstance(predictor, HNMFastRCNNOutputLayers) or uses_sigmoid_ce(predictor):
            raise HNMConfigError(
                "MODEL.HNM.FEATURE_MEMORY.ENABLED (feature_memory) adds re-fed entries to the "
                "softmax classification loss of HNMFastRCNNOutputLayers; got "
                f"{type(predictor).__name__} (use_sigmoid_ce={uses_sigmoid_ce(predictor)}). "
                "Use the box buffer (MODEL.HNM.BUFFER.ENABLED) instead, or that predictor with "
                "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE False."
            )


def _check_ohem_predictor(predictor, argument: str) -> None:
    """Refuse a box predictor whose losses OHEM cannot rank by; ``argument`` names it."""
    if not isinstance(predictor, HNMFastRCNNOutputLayers):
        raise HNMConfigError(
            f"MODEL.HNM.ROI_OHEM.ENABLED (ohem_enabled=True) needs {argument} to be an "
            "HNMFastRCNNOutputLayers, which ranks RoIs by loss; got "
            f"{type(predictor).__name__}. Build the heads from a config (MODEL.ROI_HEADS.NAME "
            "'HNMROIHeads' or 'HNMCascadeROIHeads' swaps it in), or pass "
            f"{argument}=HNMFastRCNNOutputLayers(...) (LazyConfig: "
            "L(HNMFastRCNNOutputLayers)(...))."
        )
    _refuse_ohem_with(
        {
            "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": (uses_sigmoid_ce(predictor), "set it False"),
            f"MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = {predictor.box_reg_loss_type!r}": (
                predictor.box_reg_loss_type != "smooth_l1",
                "use 'smooth_l1'",
            ),
        }
    )


def _refuse_ohem_with(unsupported: Dict[str, tuple]) -> None:
    """Raise naming the first setting that is on; ``unsupported``: setting -> (is on, fix)."""
    for setting, (is_set, fix) in unsupported.items():
        if is_set:
            raise HNMConfigError(
                f"MODEL.HNM.ROI_OHEM.ENABLED (ohem_enabled=True) is not supported with "
                f"{setting}: OHEM ranks and trains the softmax box branch of Faster R-CNN "
                f"by its cross-entropy and smooth-L1 losses. Either {fix}, or turn "
                "MODEL.HNM.ROI_OHEM.ENABLED off."
            )
