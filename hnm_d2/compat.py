"""What hnm_d2 needs from detectron2 that its last release, 0.6, does not have.

hnm_d2 runs on detectron2 0.6 (the last tag, 2021) and on the later code (upstream main, the
0.7 registry builds). Each function here bridges one change made after 0.6, and says which;
tests/test_compat.py fails when the detectron2 it runs on changes what a function relies on.
"""

from detectron2.utils import events

__all__ = ["has_event_storage", "uses_sigmoid_ce"]


def has_event_storage() -> bool:
    """Whether an EventStorage is open in this process (a trainer is running).

    detectron2.utils.events.has_event_storage came after 0.6. Before it, the same test reads
    the stack that EventStorage pushes itself onto, which is what the later function does.
    """
    if hasattr(events, "has_event_storage"):
        return events.has_event_storage()
    return len(events._CURRENT_STORAGE_STACK) > 0


def uses_sigmoid_ce(box_predictor) -> bool:
    """Whether a FastRCNNOutputLayers classifies with sigmoid cross-entropy.

    The option (MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE) came after 0.6, whose box predictor has no
    such attribute and classifies with softmax cross-entropy only.
    """
    return getattr(box_predictor, "use_sigmoid_ce", False)
