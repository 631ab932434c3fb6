"""Every rank's hard-negative buffer in the checkpoint, and a new run's empty buffer.

Per-rank: each process keeps the buffer entries of the images it trains on, in its own
:class:`~hnm_d2.modeling.HardNegativeBuffer`. Gathered: when :class:`HNMCheckpointer` saves,
every rank's table is all-gathered into the main process's buffer, which writes them to the
checkpoint as a (world_size, CAPACITY, 9) peer table beside its own, and drops them once
written. On resume each rank restores its own row (or the union when the world size changed;
see :mod:`hnm_d2.modeling.buffer`).

The gather is a collective, so every rank's checkpointer must save on the same iterations:
detectron2 runs its PeriodicCheckpointer hook on the main process only, and
:func:`periodic_checkpointer` runs it on every rank when there are buffers to gather (the other
ranks write nothing: detectron2's checkpointer saves to disk on the main process only).
"""

import logging
from typing import List

import torch
from detectron2.engine import hooks
from detectron2.utils import comm

from ..modeling import HardNegativeBuffer
from .checkpoint import AtomicDetectionCheckpointer

__all__ = ["HNMCheckpointer", "hard_negative_buffers", "periodic_checkpointer"]

logger = logging.getLogger(__name__)


def hard_negative_buffers(model) -> List[HardNegativeBuffer]:
    # modules() also walks through a DistributedDataParallel wrapper.
    return [m for m in model.modules() if isinstance(m, HardNegativeBuffer)]


class HNMCheckpointer(AtomicDetectionCheckpointer):
    """The training checkpointer of both launchers: atomic writes, and the hard-negative
    buffers of every rank saved, and emptied for a new run.

    Call :meth:`save` on every rank (see :func:`periodic_checkpointer`).
    """

    def save(self, name, **kwargs):
        buffers = hard_negative_buffers(self.model) if comm.get_world_size() > 1 else []
        for buffer in buffers:
            # Every rank takes part in the collective; only the main process writes the file.
            tables = comm.all_gather(buffer.table())
            if comm.is_main_process():
                buffer.set_peer_tables(torch.stack(tables))
        try:
            super().save(name, **kwargs)
        finally:
            for buffer in buffers:
                buffer.set_peer_tables(None)  # written: a later save gathers afresh

    def resume_or_load(self, path, *, resume=True):
        resuming = resume and self.has_checkpoint()
        checkpoint = super().resume_or_load(path, resume=resume)
        if not resuming:
            self._empty_loaded_buffers()
        return checkpoint

    def _empty_loaded_buffers(self):
        """Start a new run with empty hard-negative buffers, whatever the loaded weights held.

        The buffer is training state, like the optimizer: it lives in the model's state so
        that a resume restores it, but weights loaded to start a new run (a mining round's
        warm start, fine-tuning on another dataset) must not inject the boxes another run
        found, with another model, into this run's images.
        """
        for buffer in hard_negative_buffers(self.model):
            if buffer.num_entries:
                logger.info(
                    "The loaded weights held %d hard-negative boxes of the run that saved "
                    "them; this new run starts with an empty buffer.",
                    buffer.num_entries,
                )
            buffer.clear()


def periodic_checkpointer(checkpointer, period, **kwargs):
    """detectron2's PeriodicCheckpointer hook on the ranks that must run it, else None.

    The main process writes the checkpoints; with hard-negative buffers in a distributed run
    every other rank runs the hook too, for :class:`HNMCheckpointer`'s gather, and writes
    nothing. Removing old checkpoints (``max_to_keep``) stays the main process's job.
    """
    if comm.is_main_process():
        return hooks.PeriodicCheckpointer(checkpointer, period, **kwargs)
    if comm.get_world_size() > 1 and hard_negative_buffers(checkpointer.model):
        kwargs.pop("max_to_keep", None)
        return hooks.PeriodicCheckpointer(checkpointer, period, **kwargs)
    return None
