"""A progress bar over a detectron2 training's iterations (tqdm: done / total, rate, ETA)."""

from detectron2.engine import HookBase
from detectron2.utils import comm
from tqdm import tqdm

__all__ = ["ProgressBar"]


class ProgressBar(HookBase):
    """One tqdm bar per training, on the main process; register it last, so that it closes
    after the other hooks' ``after_train`` (the final evaluation) has run.

    Args:
        description (str): the bar's label.
        file (file-like or None): where the bar is drawn; None = tqdm's default, the
            ``sys.stderr`` of when training starts. ``make demo`` passes the terminal while it
            sends every other output to its log file.
        after_last (str or None): shown beside the bar once the last iteration is done (e.g.
            "evaluating"), so that a full bar that has not closed does not look stuck.
    """

    def __init__(self, description, file=None, after_last=None):
        self._description, self._file, self._after_last = description, file, after_last
        self._bar = None

    def before_train(self):
        self._bar = tqdm(
            total=self.trainer.max_iter,
            initial=self.trainer.start_iter,  # a resumed run starts where it stopped
            desc=self._description,
            unit="it",
            file=self._file,
            disable=not comm.is_main_process(),
        )
        self._note_if_done(self.trainer.start_iter)

    def after_step(self):
        self._bar.update(1)
        self._note_if_done(self.trainer.iter + 1)

    def after_train(self):
        self._bar.close()

    def _note_if_done(self, iterations):
        if self._after_last and iterations >= self.trainer.max_iter:
            self._bar.set_postfix_str(self._after_last)
