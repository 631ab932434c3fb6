"""DistributedDataParallel for CPU processes as well as GPUs.

detectron2's ``create_ddp_model`` passes ``device_ids=[local_rank]`` unless told otherwise, and
DistributedDataParallel refuses device ids for a model on the CPU: CPU processes (gloo) must
pass none. Both launchers (``HNMTrainer`` and ``lazy_train_net.py``) take the ids from here.
"""

import contextlib
import functools
from typing import List, Optional
from unittest import mock

import torch
from detectron2.engine import create_ddp_model, defaults
from detectron2.utils import comm

__all__ = ["ddp_device_ids", "cpu_ddp_in_default_trainer"]


def ddp_device_ids(device) -> Optional[List[int]]:
    """The ``device_ids`` DistributedDataParallel accepts for a model on ``device``."""
    return None if torch.device(device).type == "cpu" else [comm.get_local_rank()]


@contextlib.contextmanager
def cpu_ddp_in_default_trainer(device):
    """Within this context, ``DefaultTrainer.__init__`` wraps a CPU model in DDP without ids.

    DefaultTrainer builds DDP inside its ``__init__`` (detectron2 0.6 to main), through the
    ``create_ddp_model`` its module imported, with no method to override: swapping that one
    name for the call is narrower than a copy of ``__init__``. On a GPU nothing is swapped.
    tests/test_distributed.py trains two CPU processes through DefaultTrainer, so it fails if
    detectron2 ever builds DDP another way.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    without_ids = functools.partial(create_ddp_model, device_ids=None)
    with mock.patch.object(defaults, "create_ddp_model", without_ids):
        yield
