"""HardNegativeBufferSync: puts every rank's hard-negative buffer into the checkpoint.

Per-rank: each process keeps the buffer entries of the images it trains on, in its own
:class:`~hnm_d2.modeling.HardNegativeBuffer`. Gathered: on the iterations where detectron2's
PeriodicCheckpointer saves, this hook all-gathers every rank's table into rank 0's buffer,
which writes them to the checkpoint as a (world_size, CAPACITY, 9) peer table next to its own.
On resume each rank restores its own row (or the union when the world size changed; see
:mod:`hnm_d2.modeling.buffer`). The gathered copy lives for one iteration only: it is dropped
before the next step, so it never goes stale.
"""

from typing import List

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

from ..modeling.buffer import HardNegativeBuffer

__all__ = ["HardNegativeBufferSync"]


class HardNegativeBufferSync(HookBase):
    """Gather the ranks' hard-negative buffers into rank 0's before each checkpoint save.

    Register it on every rank, before the PeriodicCheckpointer hook (whose ``after_step``
    saves on the same iterations, after this one's).
    """

    def __init__(self, checkpoint_period: int):
        """
        Args:
            checkpoint_period (int): SOLVER.CHECKPOINT_PERIOD, the PeriodicCheckpointer's.
        """
        self.checkpoint_period = checkpoint_period

    def before_step(self):
        for buffer in self._buffers():
            buffer.set_peer_tables(None)

    def after_step(self):
        if comm.get_world_size() == 1 or not self._is_checkpoint_iteration():
            return
        for buffer in self._buffers():
            # Every rank takes part in the collective; only rank 0 writes the checkpoint.
            tables = comm.all_gather(buffer.table())
            if comm.is_main_process():
                buffer.set_peer_tables(torch.stack(tables))

    def _is_checkpoint_iteration(self) -> bool:
        """The iterations on which fvcore's PeriodicCheckpointer saves."""
        iteration = self.trainer.iter
        return (iteration + 1) % self.checkpoint_period == 0 or (
            iteration >= self.trainer.max_iter - 1
        )

    def _buffers(self) -> List[HardNegativeBuffer]:
        # modules() also walks through a DistributedDataParallel wrapper.
        return [m for m in self.trainer.model.modules() if isinstance(m, HardNegativeBuffer)]
