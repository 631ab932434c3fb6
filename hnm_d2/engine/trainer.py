"""HNMTrainer: detectron2's DefaultTrainer with hnm_d2's data loader, evaluator and hooks."""

import logging
import os
import shutil
import weakref

from detectron2.engine import DefaultTrainer, hooks
from detectron2.utils import comm

from ..data import build_hnm_train_loader
from ..evaluation import build_hnm_evaluator
from .buffer_checkpointing import HNMCheckpointer, periodic_checkpointer
from .ddp import cpu_ddp_in_default_trainer

__all__ = ["HNMTrainer"]

logger = logging.getLogger(__name__)

# The name detectron2's PeriodicCheckpointer gives the checkpoint of the last iteration.
_FINAL_CHECKPOINT = "model_final.pth"


class HNMTrainer(DefaultTrainer):
    """DefaultTrainer whose loader admits negative images and whose evaluator counts false alarms.

    - training data: :func:`hnm_d2.data.build_hnm_train_loader` (NegativeAwareDatasetMapper,
      optional negative-share sampler);
    - evaluation: COCOEvaluator beside :class:`hnm_d2.evaluation.NegativeImageEvaluator` (COCO
      AP on all images and on positive images alone, false alarms on negative images);
    - checkpoints written atomically and read with clear errors, every rank's hard-negative
      buffer saved with them, and emptied for a new run (:class:`HNMCheckpointer`);
    - ``--num-gpus N`` on a CPU machine runs N gloo processes.
    """

    def __init__(self, cfg):
        with cpu_ddp_in_default_trainer(cfg.MODEL.DEVICE):
            super().__init__(cfg)

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if resume and self.start_iter == self.max_iter:
            self._complete_final_checkpoint()

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
        # DefaultTrainer.__init__ made a stock DetectionCheckpointer just before it called this;
        # the hooks must save through hnm_d2's.
        self.checkpointer = HNMCheckpointer(
            self.checkpointer.model, self.checkpointer.save_dir, trainer=weakref.proxy(self)
        )
        ret = super().build_hooks()
        if not comm.is_main_process():
            # detectron2 checkpoints on the main process only; see periodic_checkpointer.
            hook = periodic_checkpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD)
            if hook is not None:
                evaluation = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
                ret.insert(evaluation, hook)  # where the main process has its checkpointer
        return ret
