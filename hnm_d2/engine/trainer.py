"""HNMTrainer: detectron2's DefaultTrainer with hnm_d2's data loader, evaluator and hooks."""

import contextlib
import functools
import logging
import os
import shutil
import weakref
from unittest import mock

from detectron2.engine import DefaultTrainer, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.utils import comm

from ..data import build_hnm_train_loader
from ..evaluation import build_negative_evaluator
from .buffer_hook import HardNegativeBufferSync
from .checkpoint import AtomicDetectionCheckpointer

__all__ = ["HNMTrainer"]

logger = logging.getLogger(__name__)

# The name detectron2's PeriodicCheckpointer gives the checkpoint of the last iteration.
_FINAL_CHECKPOINT = "model_final.pth"


@contextlib.contextmanager
def _cpu_processes_get_ddp_without_device_ids(cfg):
    """Let ``--num-gpus N`` run N CPU processes (gloo) through detectron2's own launch.

    detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which
    DistributedDataParallel rejects for a model on the CPU. While DefaultTrainer builds the
    model on the CPU in a multi-process run, it gets ``device_ids=None`` instead; nothing else
    changes, and the patch is undone when the trainer is built.
    """
    if cfg.MODEL.DEVICE != "cpu" or comm.get_world_size() == 1:
        yield
        return
    cpu_ddp = functools.partial(d2_defaults.create_ddp_model, device_ids=None)
    with mock.patch.object(d2_defaults, "create_ddp_model", cpu_ddp):
        yield


class HNMTrainer(DefaultTrainer):
    """DefaultTrainer whose loader admits negative images and whose evaluator counts false alarms.

    - training data: :func:`hnm_d2.data.build_hnm_train_loader` (NegativeAwareDatasetMapper,
      optional negative-share sampler);
    - evaluation: :class:`hnm_d2.evaluation.NegativeImageEvaluator` (COCO AP on all images
      and on positive images alone, false alarms on negative images);
    - checkpoints written atomically and read with clear errors
      (:class:`AtomicDetectionCheckpointer`);
    - with the hard-negative buffer on, a hook that gathers every rank's buffer before the
      checkpointer saves, so that resume restores each rank's own buffer.
    """

    def __init__(self, cfg):
        with _cpu_processes_get_ddp_without_device_ids(cfg):
            super().__init__(cfg)

    def resume_or_load(self, resume=True):
        resuming = resume and self.checkpointer.has_checkpoint()
        super().resume_or_load(resume=resume)
        if not resuming:
            self._forget_loaded_hard_negatives()
        elif self.start_iter == self.max_iter:
            self._complete_final_checkpoint()

    def _forget_loaded_hard_negatives(self):
        """Start a new run with an empty hard-negative buffer, whatever MODEL.WEIGHTS held.

        The buffer is training state, like the optimizer: it lives in the model's state so
        that --resume restores it, but weights loaded to start a new run (a mining round's warm
        start, fine-tuning on another dataset whose image ids may collide) must not inject the
        boxes another run found into this run's images.
        """
        buffer = getattr(self.checkpointer.model.roi_heads, "hard_negative_buffer", None)
        if buffer is not None and buffer.num_entries:
            logger.info(
                "MODEL.WEIGHTS held %d hard-negative boxes of the run that saved it; this new "
                "run starts with an empty buffer.",
                buffer.num_entries,
            )
            buffer.clear()

    def _complete_final_checkpoint(self):
        """Write model_final.pth of a run killed between the last two saves of its last iteration.

        When CHECKPOINT_PERIOD divides MAX_ITER, the PeriodicCheckpointer saves model_<N>.pth
        (N = MAX_ITER - 1) and then model_final.pth after the last iteration. A kill between
        the two leaves last_checkpoint naming model_<N>.pth; the resumed run has no iteration
        left, so the checkpointer never runs again and model_final.pth (which the mining loop
        loads for the next round) would never be written. Both files hold the same state
        (buffer peer tables included): copy it, atomically.
        """
        last = self.checkpointer.get_checkpoint_file()
        if self.checkpointer.save_to_disk and os.path.basename(last) != _FINAL_CHECKPOINT:
            final = os.path.join(self.checkpointer.save_dir, _FINAL_CHECKPOINT)
            logger.warning(
                "%s names %s, the checkpoint of the last iteration: the run was interrupted "
                "before it saved %s. Copying the former to the latter.",
                os.path.join(self.checkpointer.save_dir, "last_checkpoint"),
                last,
                final,
            )
            path_manager = self.checkpointer.path_manager
            with path_manager.open(last, "rb") as src, path_manager.open(final, "wb") as dst:
                shutil.copyfileobj(src, dst)
            self.checkpointer.tag_last_checkpoint(_FINAL_CHECKPOINT)
        # The other ranks may read model_final.pth next (the mining loop does).
        comm.synchronize()

    def train(self):
        """Train; return the last evaluation's results (DefaultTrainer returns them only when
        TEST.EXPECTED_RESULTS is set), so the launcher can log and save them."""
        super().train()
        return getattr(self, "_last_eval_results", None)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_hnm_train_loader(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_negative_evaluator(cfg, dataset_name, output_folder)

    def build_hooks(self):
        # DefaultTrainer.__init__ made a plain DetectionCheckpointer just before calling this;
        # swap it before the PeriodicCheckpointer hook takes a reference to it.
        self.checkpointer = AtomicDetectionCheckpointer(
            self.checkpointer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        ret = super().build_hooks()
        if self.cfg.MODEL.HNM.BUFFER.ENABLED:
            # Must run on every rank, before the (main-process only) checkpointer saves.
            before = next(
                i
                for i, h in enumerate(ret)
                if isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook))
            )
            ret.insert(before, HardNegativeBufferSync(self.cfg.SOLVER.CHECKPOINT_PERIOD))
        return ret
