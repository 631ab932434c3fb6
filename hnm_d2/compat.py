"""What hnm_d2 needs from detectron2 that its last release, 0.6, does not have.

hnm_d2 runs on detectron2 0.6 (the last tag, 2021) and on the later code (upstream main, the
0.7 registry builds). Each function here bridges one change made after 0.6, and says which;
tests/test_compat.py fails when the detectron2 it runs on changes what a function relies on.
"""

import inspect
import logging
import sys

from detectron2.data import build_detection_test_loader
from detectron2.utils import comm, events
from detectron2.utils.logger import setup_logger

__all__ = [
    "build_batched_test_loader",
    "has_event_storage",
    "launch_runs_cpu_processes",
    "setup_logger_to_file",
    "uses_sigmoid_ce",
]

logger = logging.getLogger(__name__)


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


def build_batched_test_loader(dataset, *, mapper, batch_size: int, num_workers: int):
    """detectron2's build_detection_test_loader, ``batch_size`` images per batch.

    Its batch_size argument came after 0.6, whose test loader gives one image per batch: there
    the images go through the model one at a time, with a warning.
    """
    if "batch_size" in inspect.signature(build_detection_test_loader).parameters:
        return build_detection_test_loader(
            dataset, mapper=mapper, batch_size=batch_size, num_workers=num_workers
        )
    if batch_size != 1:
        logger.warning(
            f"Batches of 1 image, not {batch_size} (HNM.MINING.SCORE_BATCH_SIZE): this "
            "detectron2's build_detection_test_loader has no batch_size (it came after 0.6)."
        )
    return build_detection_test_loader(dataset, mapper=mapper, num_workers=num_workers)


def launch_runs_cpu_processes() -> bool:
    """Whether detectron2's launch can start several processes on a machine without GPUs.

    It can since January 2023 (gloo when CUDA is missing), after 0.6, whose launch asserts that
    CUDA is there. comm.create_local_process_group came with that rework, two weeks later;
    its presence tells the two apart.
    """
    return hasattr(comm, "create_local_process_group")


def setup_logger_to_file(output: str, name: str, to_terminal: bool) -> logging.Logger:
    """detectron2's setup_logger for ``name``, writing to ``output``, and to the terminal only
    when ``to_terminal``.

    setup_logger's configure_stdout came after 0.6, whose setup_logger always adds a handler on
    sys.stdout (rank 0): without the option, that handler is taken off again. setup_logger is
    cached on its arguments, so a second call adds nothing back.
    """
    if "configure_stdout" in inspect.signature(setup_logger).parameters:
        return setup_logger(output=output, name=name, configure_stdout=to_terminal)
    library_logger = setup_logger(output=output, name=name)
    if not to_terminal:
        for handler in list(library_logger.handlers):
            if type(handler) is logging.StreamHandler and handler.stream is sys.stdout:
                library_logger.removeHandler(handler)
    return library_logger
