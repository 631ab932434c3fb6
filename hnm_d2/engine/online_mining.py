"""Online image-level mining: one training run with one schedule, in which a hook scores the
images still in the pool every K iterations and moves the hardest into the training stream.

The rounds of :mod:`hnm_d2.engine.mining` retrain, and a budget shared by R + 1 rounds gives
each round a short schedule with its own warm-up and learning-rate drops; negatives added late
get few iterations. Here the budget is a plain run's: SOLVER.MAX_ITER iterations on one
schedule, over DATASETS.TRAIN from the start and the mined pool images from the step that
mines them. Step k (k = 1 .. HNM.MINING.ROUNDS) runs after iteration k * K, K =
HNM.MINING.MINE_EVERY (0: MAX_ITER // (ROUNDS + 1)), and adds HNM.MINING.PER_ROUND images (the
hardest, or with HNM.MINING.SELECTION "random" as many drawn at random: the control).

The training set and the whole pool form one dataset; :class:`ActiveSubsetTrainingSampler`
draws only its active part, which mining grows. Files under OUTPUT_DIR/mining/:

    settings.json          what the run mines with; a resumed run must match it
    online/                the training (checkpoints, metrics.json, inference/)
    step_K.json            step K's chosen images with their scores and detections
    step_K_mined.png       those images with the detections that got them chosen
    report.json, curves.png  every step so far, and the final evaluation
    review.html, review/   every step's chosen images, for a person to judge; written with
                           each step (:mod:`hnm_d2.engine.review_page`)
    verdicts_applied.json, to_annotate.json   the verdicts obeyed (:mod:`hnm_d2.engine.verdicts`)

A mined image's detections judged false alarms go with its record as "negative_boxes".

Resume (the same command again, or --resume): the steps done are part of the trainer's state in
its checkpoint (detectron2 saves hooks' state), so a resumed run re-activates their images and
mines on from there; given verdicts (HNM.MINING.VERDICTS), it re-activates only the images not
judged to hold an object or unsure, and those never return to the pool. Distributed: every
process scores its shard of the pool; the main process chooses, and every process activates the
same images.
"""

import logging
import os

from detectron2.data import (
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import HookBase, hooks
from detectron2.utils import comm

from ..config import HNMConfigError, validate_hnm_config
from ..data import NegativeAwareDatasetMapper
from ..data.active_sampler import ActiveSubsetTrainingSampler
from ..utils.atomic import write_json_atomically
from .launcher import log_summary
from .mining_pool import open_checked_pool
from .mining_report import added_images_entry, plot_mined_images, plot_online_curves
from .mining_state import MiningLayout, main_process_value, mining_settings, start_or_resume
from .pool_scoring import mine_pool
from .review_page import write_review_page
from .trainer import HNMTrainer
from .verdicts import ObeyedVerdicts, obey_verdicts

__all__ = ["OnlineMiningTrainer", "OnlineMiningHook", "mining_period", "run_online_mining"]

logger = logging.getLogger(__name__)


def mining_period(cfg):
    """K, the iterations between two mining steps."""
    return cfg.HNM.MINING.MINE_EVERY or cfg.SOLVER.MAX_ITER // (cfg.HNM.MINING.ROUNDS + 1)


def _check_online_settings(cfg):
    """Refuse the rounds-only keys, which online mining would otherwise ignore."""
    if cfg.HNM.MINING.ITERS_PER_ROUND or cfg.HNM.MINING.FROM_SCRATCH:
        raise HNMConfigError(
            "HNM.MINING.ONLINE (--online) trains one schedule of SOLVER.MAX_ITER iterations: "
            "HNM.MINING.ITERS_PER_ROUND (--iters-per-round) and HNM.MINING.FROM_SCRATCH "
            "(--from-scratch) belong to the rounds; leave them unset, and set how often to mine "
            "with HNM.MINING.MINE_EVERY (--mine-every)."
        )
    if cfg.HNM.DATA.NEGATIVE_FRACTION != -1:
        raise HNMConfigError(
            f"HNM.DATA.NEGATIVE_FRACTION = {cfg.HNM.DATA.NEGATIVE_FRACTION} is not supported with "
            "HNM.MINING.ONLINE: online mining draws from the training set and the images it has "
            "mined so far, in their natural share. Set it to -1."
        )
    if mining_period(cfg) < 1:
        raise HNMConfigError(
            f"SOLVER.MAX_ITER = {cfg.SOLVER.MAX_ITER} is too short for HNM.MINING.ROUNDS = "
            f"{cfg.HNM.MINING.ROUNDS} mining steps: set HNM.MINING.MINE_EVERY (--mine-every) to "
            "the iterations between two steps, or mine fewer steps."
        )
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise HNMConfigError(
            f"DATALOADER.SAMPLER_TRAIN = {cfg.DATALOADER.SAMPLER_TRAIN!r} is not supported with "
            "HNM.MINING.ONLINE, which draws with its own sampler over the training set and the "
            "images mined so far. Set it to 'TrainingSampler'."
        )
    if mining_period(cfg) * cfg.HNM.MINING.ROUNDS >= cfg.SOLVER.MAX_ITER:
        raise HNMConfigError(
            f"HNM.MINING.ROUNDS = {cfg.HNM.MINING.ROUNDS} steps every {mining_period(cfg)} "
            f"iterations (HNM.MINING.MINE_EVERY) do not fit in SOLVER.MAX_ITER = "
            f"{cfg.SOLVER.MAX_ITER}: the last step would add images no iteration trains on. "
            "Mine fewer steps or more often."
        )


class OnlineMiningData:
    """The training set and the pool as one dataset, and the sampler over its active part.

    Attributes:
        dataset_dicts (list[dict]): the training records, then the pool's (a judged image's
            with its boxes judged false alarms as "negative_boxes").
        pool_index (dict): pool file_name -> index in ``dataset_dicts``.
        sampler (ActiveSubsetTrainingSampler): the training records active from the start.
    """

    def __init__(self, cfg, pool, verdicts):
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            logger.warning(
                "DATALOADER.FILTER_EMPTY_ANNOTATIONS is True: detectron2 removes the negative "
                "images of DATASETS.TRAIN (the mined pool images are kept). Set it False to "
                "train on them too."
            )
        training = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        # Every pool image, mined ones included: a resume re-activates those after this.
        pool_records = [verdicts.training_record(r) for r in pool.remaining()]
        self.dataset_dicts = training + pool_records
        self.pool_index = {r["file_name"]: len(training) + k for k, r in enumerate(pool_records)}
        self.sampler = ActiveSubsetTrainingSampler(len(self.dataset_dicts), range(len(training)))


class OnlineMiningHook(HookBase):
    """Every K iterations, score the pool with the training model and activate the hardest."""

    def __init__(self, cfg, data, pool, layout, withheld=frozenset()):
        """
        Args:
            cfg (CfgNode): HNM.MINING.* and the test-time input settings used to score.
            data (OnlineMiningData): the dataset whose sampler the hook grows.
            pool (CandidatePool): the candidates; chosen images are taken out of it.
            layout (MiningLayout): where the steps' files go.
            withheld (frozenset): file_names a person judged to hold an object, or unsure:
                a step that chose them takes them from the pool but does not train on them.
        """
        self._cfg, self._data, self._pool, self._layout = cfg, data, pool, layout
        self._withheld = withheld
        self._period, self._max_steps = mining_period(cfg), cfg.HNM.MINING.ROUNDS
        self.steps = []  # one summary per step done, as step_K.json has it

    def after_step(self):
        iteration = self.trainer.iter + 1
        step = len(self.steps) + 1
        if step <= self._max_steps and iteration == step * self._period:
            self._activate(main_process_value(self._mine(step, iteration)))

    def _mine(self, step, iteration):
        """Score the remaining pool (every process); the step's summary on the main process."""
        model = getattr(self.trainer.model, "module", self.trainer.model)  # DDP or not
        choice = mine_pool(
            model,
            self._pool,
            self._cfg,
            self._data.sampler.num_active,
            description=f"Mining step {step}: scoring {len(self._pool)} pool images",
            step=step,
        )
        if not comm.is_main_process():
            return None
        # thing_classes: to label the detections on the review page.
        thing_classes = self._layout.metadata.get("thing_classes", None)
        summary = {"step": step, "iteration": iteration, "thing_classes": thing_classes, **choice}
        self._write_step_files(summary)
        return summary

    def _activate(self, summary):
        file_names = [image["file_name"] for image in summary["images"]]
        self._pool.take(file_names, self._layout.step(summary["step"]))
        trained = [f for f in file_names if f not in self._withheld]
        self._data.sampler.activate([self._data.pool_index[f] for f in trained])
        self.steps.append(summary)
        if len(trained) < len(file_names):
            logger.info(
                "Mining step %d: %d of its images are left out of training by the verdicts.",
                summary["step"],
                len(file_names) - len(trained),
            )
        if not file_names:
            logger.warning(
                "Mining step %d: no pool image gets a detection above "
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST; nothing added.",
                summary["step"],
            )
            return
        scores = [image["score"] for image in summary["images"]]
        logger.info(
            "Mining step %d (iteration %d): %d pool images join the training stream (scores "
            "%.3f to %.3f); %d left in the pool.",
            summary["step"],
            summary["iteration"],
            len(file_names),
            max(scores),
            min(scores),
            len(self._pool),
        )

    def _write_step_files(self, summary):
        how = "drawn at random" if summary.get("selection") == "random" else "mined"
        plot_mined_images(
            summary["images"],
            self._layout.metadata,
            self._layout.step_plot(summary["step"]),
            title=f"Step {summary['step']} (iteration {summary['iteration']}): images {how}",
        )
        write_json_atomically(self._layout.step(summary["step"]), summary)
        write_review_page(self._layout)

    def state_dict(self):
        # Saved with the trainer's state in each checkpoint, so --resume re-activates them.
        return {"steps": self.steps}

    def load_state_dict(self, state):
        for summary in state["steps"]:
            self._activate(summary)


class OnlineMiningTrainer(HNMTrainer):
    """HNMTrainer over the training set and the pool, with the online mining hook."""

    def __init__(self, cfg, pool, layout, verdicts=None):
        """
        Args:
            cfg (CfgNode): the training config (OUTPUT_DIR: the online training folder).
            pool (CandidatePool): the candidates.
            layout (OnlineLayout): the run's files.
            verdicts (ObeyedVerdicts or None): the verdicts obeyed; None: none.
        """
        self._verdicts = verdicts or ObeyedVerdicts()
        # Before DefaultTrainer.__init__, which builds the train loader from it.
        self.mining_data = OnlineMiningData(cfg, pool, self._verdicts)
        self._pool, self._layout = pool, layout
        super().__init__(cfg)

    # An instance method where detectron2 has a classmethod: the loader is this run's dataset
    # and sampler (DefaultTrainer.__init__ calls it on the instance).
    def build_train_loader(self, cfg):
        return build_detection_train_loader(
            cfg,
            mapper=NegativeAwareDatasetMapper(cfg, True),
            dataset=self.mining_data.dataset_dicts,
            sampler=self.mining_data.sampler,
        )

    def build_hooks(self):
        ret = super().build_hooks()
        # Before the checkpointer: a checkpoint of a mining iteration records that step.
        before = next(i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicCheckpointer))
        self.mining_hook = OnlineMiningHook(
            self.cfg, self.mining_data, self._pool, self._layout, self._verdicts.withheld
        )
        ret.insert(before, self.mining_hook)
        return ret


class OnlineLayout(MiningLayout):
    """MiningLayout plus the online run's training folder and metadata."""

    def __init__(self, output_dir, metadata):
        super().__init__(output_dir)
        self.training_dir = os.path.join(self.root, "online")
        self.metadata = metadata  # to draw the mined images


def run_online_mining(cfg):
    """Train once with online mining (see the module docstring), resuming from OUTPUT_DIR.

    Must be called on every process, after the pool and training datasets are registered.

    Returns:
        dict: the report, as written to OUTPUT_DIR/mining/report.json: "mode", "pool",
        "selection", "mine_every", "steps" (each step's iteration, images added and their
        scores, pool size), "training_dir" and "results" (the final evaluation, as train_net.py's
        results.json has it).
    """
    validate_hnm_config(cfg, prefix="HNM.MINING")
    _check_online_settings(cfg)
    pool, _ = open_checked_pool(cfg)  # before anything trains
    layout = OnlineLayout(cfg.OUTPUT_DIR, MetadataCatalog.get(cfg.DATASETS.TRAIN[0]))
    settings = {**mining_settings(cfg), "online": True, "mine_every": mining_period(cfg)}
    start_or_resume(layout, settings, logger)
    verdicts = obey_verdicts(cfg, layout, layout.metadata)
    if comm.is_main_process():
        write_review_page(layout)  # with the verdicts just obeyed
    train_cfg = cfg.clone()
    train_cfg.defrost()
    train_cfg.OUTPUT_DIR = layout.training_dir
    train_cfg.freeze()
    trainer = OnlineMiningTrainer(train_cfg, pool, layout, verdicts)
    trainer.resume_or_load(resume=True)  # re-activates the steps done, but the withheld images
    # A step done again after the resume chose anew: the withheld images it did not choose
    # again are still candidates, and must never be.
    pool.set_aside(verdicts.withheld)
    results = trainer.train()
    report = {
        "mode": "online",
        "pool": list(cfg.HNM.MINING.POOL),
        "selection": cfg.HNM.MINING.SELECTION,
        "mine_every": mining_period(cfg),
        "steps": [
            {
                "step": s["step"],
                "iteration": s["iteration"],
                **added_images_entry(s["images"], s["pool_size_after"], verdicts.negative_boxes),
            }
            for s in trainer.mining_hook.steps
        ],
        "training_dir": layout.training_dir,
        "verdicts": verdicts.report_entry(),
        "results": results,
    }
    if comm.is_main_process():
        log_summary(results, cfg.DATASETS.TEST)
        write_json_atomically(layout.report, report)
        plot_online_curves(report, layout.curves)
    comm.synchronize()
    return report
