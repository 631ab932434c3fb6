"""HNMTrainer: detectron2's DefaultTrainer with hnm_d2's data loader, evaluator and hooks."""

import logging
import os
import shutil
import weakref

import torch
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    hooks,
)
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import build_hnm_train_loader
from ..evaluation import build_hnm_evaluator
from .buffer_hook import HardNegativeBufferSync
from .checkpoint import AtomicDetectionCheckpointer

__all__ = ["HNMTrainer"]

logger = logging.getLogger(__name__)

# The name detectron2's PeriodicCheckpointer gives the checkpoint of the last iteration.
_FINAL_CHECKPOINT = "model_final.pth"


def _create_ddp_model(model, device):
    """detectron2's ``create_ddp_model``, with the device ids DDP accepts on ``device``.

    detectron2 always passes ``device_ids=[local_rank]``, which DistributedDataParallel rejects
    for a model on the CPU; CPU processes (gloo) must pass none.
    """
    device_ids = None if torch.device(device).type == "cpu" else [comm.get_local_rank()]
    return create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)


class HNMTrainer(DefaultTrainer):
    """DefaultTrainer whose loader admits negative images and whose evaluator counts false alarms.

    - training data: :func:`hnm_d2.data.build_hnm_train_loader` (NegativeAwareDatasetMapper,
      optional negative-share sampler);
    - evaluation: COCOEvaluator beside :class:`hnm_d2.evaluation.NegativeImageEvaluator` (COCO
      AP on all images and on positive images alone, false alarms on negative images);
    - checkpoints written atomically and read with clear errors
      (:class:`AtomicDetectionCheckpointer`);
    - with the hard-negative buffer on, a hook that gathers every rank's buffer before the
      checkpointer saves, so that resume restores each rank's own buffer;
    - ``--num-gpus N`` on a CPU machine runs N gloo processes.
    """

    def __init__(self, cfg):
        """DefaultTrainer.__init__ of detectron2 0.7, step for step and in the same order (so a
        seeded build draws the same random numbers), with two differences: DDP gets device ids
        only on GPUs (see :func:`_create_ddp_model`; detectron2 builds DDP inside its __init__,
        with no hook to override), and the checkpointer is the atomic one.
        """
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()  # as DefaultTrainer does when default_setup was not called
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = _create_ddp_model(model, cfg.MODEL.DEVICE)
        trainer_class = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_class(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

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
        start, fine-tuning on another dataset) must not inject the boxes another run found,
        with another model, into this run's images.
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
        return build_hnm_evaluator(cfg, dataset_name, output_folder)

    def build_hooks(self):
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
