"""ProgressBar: a training's iterations drawn as one tqdm bar, from where a resumed run starts."""

import io

from detectron2.engine import TrainerBase

from hnm_d2.engine import ProgressBar


class IdleLoop(TrainerBase):
    """A training loop whose steps do nothing: only the hooks run."""

    def run_step(self):
        pass


def drawn_bar(start_iter, max_iter):
    """The last state the progress bar drew for a training from ``start_iter`` to ``max_iter``;
    and the first."""
    out = io.StringIO()
    loop = IdleLoop()
    loop.register_hooks([ProgressBar("stock", file=out, after_last="evaluating")])
    loop.train(start_iter, max_iter)
    drawings = [d for d in out.getvalue().replace("\n", "\r").split("\r") if d.strip()]
    return drawings[0], drawings[-1]


def test_the_progress_bar_counts_the_iterations():
    first, last = drawn_bar(0, 5)
    assert first.startswith("stock") and "0/5" in first
    assert "5/5" in last and "evaluating" in last


def test_a_resumed_training_is_counted_from_where_it_stopped():
    first, last = drawn_bar(3, 5)
    assert "3/5" in first and "evaluating" not in first
    assert "5/5" in last and "evaluating" in last
