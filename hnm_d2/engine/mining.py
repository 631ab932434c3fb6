"""The image-level mining loop: train, score a pool of negatives, add the hardest, retrain.

Round 0 trains on DATASETS.TRAIN and evaluates on DATASETS.TEST. Round k >= 1 scores the images
still in the pool with round k-1's model, moves the highest-scored ones (``pool_scoring``; with
HNM.MINING.SELECTION "random", as many drawn at random, the control) into a registered dataset
``hnm_mined_round_<k>`` that joins DATASETS.TRAIN, trains (a warm start from round k-1's final
weights with a fresh optimizer and schedule, or from scratch) and evaluates. The pool is checked
before round 0 trains: negative images only, none of them (by file) in DATASETS.TRAIN.

Each round trains for HNM.MINING.ITERS_PER_ROUND iterations (0 = SOLVER.MAX_ITER). A shorter
round keeps the schedule's shape: SOLVER.STEPS and SOLVER.WARMUP_ITERS are scaled by
ITERS_PER_ROUND / MAX_ITER, so R + 1 rounds of MAX_ITER / (R + 1) iterations spend the budget of
one stock run, each with its own warm-up and learning-rate drops.

Files under OUTPUT_DIR/mining/, written by the main process, each atomically:

    settings.json            what the rounds are mined with; a resumed run must match it
    round_K_selection.json   round K's chosen images, written before round K trains
    round_K/                 round K's training dir (checkpoints, metrics.json, inference/)
    round_K_mined.png        the chosen images with the detections that got them chosen
    round_K.json             round K's summary, written once it is trained and evaluated
    report.json, curves.png  every round so far
    review.html, review/     every round's chosen images, for a person to judge; written with
                             each selection (:mod:`hnm_d2.engine.review_page`)
    verdicts_applied.json    the verdicts obeyed (HNM.MINING.VERDICTS, merged over the runs): a
                             round trains without the images judged to hold an object or unsure,
                             and with the boxes judged false alarms as their "negative_boxes"
    to_annotate.json         the images judged to hold an object, as COCO, to annotate
                             (:mod:`hnm_d2.engine.verdicts`)

Resume (the same command again): a round with round_K.json is done and read back; a round with
a selection but no summary reuses the selection and resumes training from round_K/'s last
checkpoint; a round without a selection is scored again (scoring writes nothing).

Distributed: every process runs the loop, trains (DDP) and scores its shard of the pool. The
main process alone writes files, and every decision read from a file or made from the gathered
scores is the main process's, broadcast to the others with ``comm.all_gather``.
"""

import logging
import math
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from ..config import validate_hnm_config
from ..utils.atomic import write_json_atomically
from .checkpoint import AtomicDetectionCheckpointer
from .launcher import log_summary
from .mining_pool import open_checked_pool
from .mining_report import build_report, plot_curves, plot_mined_images
from .mining_state import (
    MiningLayout,
    main_process_value,
    mining_settings,
    read_on_main_process,
    start_or_resume,
)
from .pool_scoring import mine_pool
from .review_page import write_review_page
from .trainer import HNMTrainer
from .verdicts import obey_verdicts

__all__ = [
    "run_mining",
    "MiningLoop",
    "register_mined_dataset",
    "mined_dataset_name",
    "scaled_schedule",
]

logger = logging.getLogger(__name__)


MINED_DATASET_PREFIX = "hnm_mined_round_"


def mined_dataset_name(k):
    """Name under which round k's chosen images are registered."""
    return f"{MINED_DATASET_PREFIX}{k}"


def register_mined_dataset(k, records, thing_classes):
    """Register round k's chosen images as a dataset; returns its name.

    A registration of the same name by an earlier mining run in this process is replaced: the
    files of this run's OUTPUT_DIR decide what the round added.

    Raises:
        ValueError: the name is taken by a dataset that the mining loop did not register.
    """
    name = mined_dataset_name(k)
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get("mined_in_round") != k:
            raise ValueError(
                f"Dataset '{name}' is already registered, not by the mining loop, which registers "
                "each round's mined images under that name: rename your dataset."
            )
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    records = list(records)
    DatasetCatalog.register(name, lambda: records)
    # The training set's class names: detectron2 requires all training datasets to agree.
    extra = {"thing_classes": list(thing_classes)} if thing_classes is not None else {}
    MetadataCatalog.get(name).set(mined_in_round=k, **extra)
    return name


def scaled_schedule(max_iter, steps, warmup_iters, iterations):
    """The solver schedule of a round of ``iterations``: the stock schedule's shape, scaled.

    Args:
        max_iter (int): SOLVER.MAX_ITER of the stock schedule.
        steps (Sequence[int]): its SOLVER.STEPS.
        warmup_iters (int): its SOLVER.WARMUP_ITERS.
        iterations (int): the round's iterations.

    Returns:
        tuple: (MAX_ITER, STEPS, WARMUP_ITERS) for the round. Steps and warm-up are scaled by
        ``iterations / max_iter`` and rounded half up; steps that land on 0, on or past the end,
        or on an earlier step are dropped (detectron2's scheduler requires strictly increasing
        steps inside the run).
    """
    ratio = iterations / max_iter
    scaled = sorted({_round_half_up(s * ratio) for s in steps})
    steps = tuple(s for s in scaled if 0 < s < iterations)
    return iterations, steps, _round_half_up(warmup_iters * ratio)


def _round_half_up(x):
    return math.floor(x + 0.5)


def _per_test_set(cfg, results):
    # HNMTrainer.train returns a lone test set's results unwrapped, and None without DATASETS.TEST.
    if not results:
        return {}
    if len(cfg.DATASETS.TEST) == 1:
        return {cfg.DATASETS.TEST[0]: results}
    return dict(results)


class MiningLoop:
    """Runs the rounds of one OUTPUT_DIR; see the module docstring. Use :func:`run_mining`."""

    def __init__(self, cfg):
        validate_hnm_config(cfg, prefix="HNM.MINING")
        self._cfg = cfg
        self._layout = MiningLayout(cfg.OUTPUT_DIR)
        # Before round 0 trains: a pool that cannot be mined fails now, not a round later.
        self._pool, training_images = open_checked_pool(cfg)
        self._train_names = list(cfg.DATASETS.TRAIN)
        self._train_size = len(training_images)
        self._metadata = MetadataCatalog.get(self._train_names[0])
        self._thing_classes = self._metadata.get("thing_classes")
        self._summaries = []
        self._verdicts = None  # obeyed from the start of run()

    def run(self):
        """Run (or resume) every round; returns the report (see ``build_report``)."""
        start_or_resume(self._layout, mining_settings(self._cfg), logger)
        self._verdicts = obey_verdicts(self._cfg, self._layout, self._metadata)
        if comm.is_main_process():
            write_review_page(self._layout)  # with the verdicts just obeyed
        stop_reason = None
        for k in range(self._rounds + 1):
            selection = None
            if k > 0:
                selection = self._selection(k)
                if not selection["images"]:
                    stop_reason = selection["stop_reason"]
                    logger.warning(stop_reason)
                    break
                self._add_to_training_set(k, selection)
            self._summaries.append(self._finished_round(k) or self._train_round(k, selection))
            self._write_report(stop_reason=None)
        if stop_reason is not None:
            self._write_report(stop_reason)
        comm.synchronize()
        return self._report(stop_reason)

    @property
    def _rounds(self):
        return self._cfg.HNM.MINING.ROUNDS

    # ------------------------------------------------------------------ choosing images

    def _selection(self, k):
        """Round k's chosen images: the persisted selection, or a new one (scored now)."""
        selection = read_on_main_process(self._layout.selection(k))
        if selection is not None:
            logger.info("Round %d: reusing the selection in %s.", k, self._layout.selection(k))
            return selection
        return main_process_value(self._score_and_select(k))

    def _score_and_select(self, k):
        """Score the remaining pool with round k-1's model; the selection on the main process.

        The selection is written before round k trains, so an interrupted round k reuses it.
        """
        if self._pool.total == 0:
            return self._exhausted(k, f"the pool ({', '.join(self._pool.names)}) has no image")
        if len(self._pool) == 0:
            return self._exhausted(
                k, f"every image of the pool ({self._pool_description}) was added already"
            )
        model = HNMTrainer.build_model(self._cfg)
        AtomicDetectionCheckpointer(model).load(
            self._layout.final_weights(k - 1), checkpointables=[]
        )
        choice = mine_pool(
            model,
            self._pool,
            self._cfg,
            self._train_size,
            description=f"Round {k}: scoring {len(self._pool)} pool images",
            step=k,
        )
        if not comm.is_main_process():
            return None
        if not choice["images"]:
            threshold = self._cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
            return self._exhausted(
                k,
                f"none of the {choice['images_scored']} images left in the pool "
                f"({self._pool_description}) gets a detection scored above "
                f"MODEL.ROI_HEADS.SCORE_THRESH_TEST = {threshold} from round {k - 1}'s model: "
                "the pool is exhausted (a lower threshold lets lower-scored images be mined)",
            )
        selection = {
            "round": k,
            "scored_with": self._layout.final_weights(k - 1),
            "thing_classes": self._thing_classes,  # to label the detections on the review page
            **choice,
        }
        write_json_atomically(self._layout.selection(k), selection)
        write_review_page(self._layout)  # to judge the images while the round trains
        return selection

    @property
    def _pool_description(self):
        return f"{', '.join(self._pool.names)}: {self._pool.total} images in all"

    def _exhausted(self, k, why):
        # Not persisted: a resumed run scores again, which a lower SCORE_THRESH_TEST may change.
        done = "round 0" if k == 1 else f"rounds 0 to {k - 1}"
        message = f"Mining stops at round {k}: {why}. {self._layout.report} reports {done}."
        return {"round": k, "images": [], "stop_reason": message}

    def _add_to_training_set(self, k, selection):
        file_names = [image["file_name"] for image in selection["images"]]
        records = self._pool.take(file_names, self._layout.selection(k))
        # Judged to hold an object, or unsure: out of the pool (taken) and out of training.
        trained = [
            self._verdicts.training_record(r)
            for r in records
            if r["file_name"] not in self._verdicts.withheld
        ]
        if trained:  # detectron2 refuses a training dataset without images
            self._train_names.append(register_mined_dataset(k, trained, self._thing_classes))
        self._train_size += len(trained)
        scores = [image["score"] for image in selection["images"]]
        logger.info(
            "Round %d: %d pool images join the training set (scores %.3f to %.3f; %d more left "
            "out by the verdicts; %d boxes judged false alarms train as background): %d "
            "training images, %d left in the pool.",
            k,
            len(trained),
            max(scores),
            min(scores),
            len(records) - len(trained),
            self._verdicts.false_alarm_boxes(file_names),
            self._train_size,
            len(self._pool),
        )

    # ------------------------------------------------------------------ training rounds

    def _finished_round(self, k):
        summary = read_on_main_process(self._layout.summary(k))
        if summary is not None:
            logger.info("Round %d is done: read back from %s.", k, self._layout.summary(k))
        return summary

    def _round_config(self, k):
        cfg = self._cfg.clone()
        cfg.defrost()
        cfg.OUTPUT_DIR = self._layout.round_dir(k)
        cfg.DATASETS.TRAIN = tuple(self._train_names)
        if k > 0 and not cfg.HNM.MINING.FROM_SCRATCH:
            cfg.MODEL.WEIGHTS = self._layout.final_weights(k - 1)
        iterations = cfg.HNM.MINING.ITERS_PER_ROUND or cfg.SOLVER.MAX_ITER
        cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS = scaled_schedule(
            cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS, iterations
        )
        cfg.freeze()
        return cfg

    def _train_round(self, k, selection):
        """Train (or resume training) round k, evaluate it and write its summary."""
        cfg = self._round_config(k)
        if comm.is_main_process():
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        comm.synchronize()
        logger.info(
            "Round %d: training on %s for %d iterations from %s, in %s.",
            k,
            ", ".join(cfg.DATASETS.TRAIN),
            cfg.SOLVER.MAX_ITER,
            cfg.MODEL.WEIGHTS or "scratch",
            cfg.OUTPUT_DIR,
        )
        trainer = HNMTrainer(cfg)
        # Resumes from the round's last checkpoint if any, else loads cfg.MODEL.WEIGHTS alone.
        trainer.resume_or_load(resume=True)
        # The evaluation after the last iteration; it also runs when an interrupted round had
        # finished training (there are no iterations left, only that evaluation).
        results = trainer.train()
        summary = None
        if comm.is_main_process():
            summary = self._summary(k, cfg, selection, _per_test_set(cfg, results))
            self._write_round_files(k, selection, summary)
        return main_process_value(summary)

    def _summary(self, k, cfg, selection, eval_results):
        added = [] if selection is None else selection["images"]
        return {
            "round": k,
            "training_dir": cfg.OUTPUT_DIR,
            "weights": self._layout.final_weights(k),
            "initialized_from": cfg.MODEL.WEIGHTS,
            "iterations": cfg.SOLVER.MAX_ITER,
            "train_datasets": list(cfg.DATASETS.TRAIN),
            "train_size": self._train_size,
            "pool_size_before": len(self._pool) + len(added),
            "pool_size_after": len(self._pool),
            "added": [{key: image[key] for key in image if key != "detections"} for image in added],
            "eval": eval_results,
        }

    def _write_round_files(self, k, selection, summary):
        log_summary(summary["eval"])
        if selection is not None:
            how = "drawn at random and " if selection.get("selection") == "random" else ""
            plot_mined_images(
                selection["images"],
                MetadataCatalog.get(self._train_names[0]),
                self._layout.mined_plot(k),
                title=f"Round {k}: pool images {how}added to the training set",
            )
        # Last: its presence marks the round as done.
        write_json_atomically(self._layout.summary(k), summary)

    def _report(self, stop_reason):
        return build_report(
            self._summaries,
            self._pool.names,
            self._rounds,
            stop_reason,
            verdicts=self._verdicts.report_entry(),
            negative_boxes=self._verdicts.negative_boxes,
            selection=self._cfg.HNM.MINING.SELECTION,
        )

    def _write_report(self, stop_reason):
        if not comm.is_main_process():
            return
        report = self._report(stop_reason)
        write_json_atomically(self._layout.report, report)
        plot_curves(report, self._layout.curves)


def run_mining(cfg):
    """Run the image-level mining loop of ``cfg``, resuming from its OUTPUT_DIR.

    Must be called on every process of a distributed run, after the pool and training datasets
    are registered in each.

    Args:
        cfg (CfgNode): a config with the hnm_d2 keys; HNM.MINING.* says what to mine (POOL,
            ROUNDS, PER_ROUND, SELECTION, ITERS_PER_ROUND, FROM_SCRATCH, SCORE_BATCH_SIZE).

    Returns:
        dict: the report, as written to OUTPUT_DIR/mining/report.json.

    Raises:
        HNMConfigError: an HNM.MINING value is out of range.
        ValueError: ROUNDS > 0 without a pool, a pool dataset is not registered or has images
            with annotations, or a pool image is also in DATASETS.TRAIN.
        MiningStateError: OUTPUT_DIR holds rounds mined with other settings or pool.
    """
    return MiningLoop(cfg).run()
