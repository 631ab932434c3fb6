"""The image-level mining loop: train, score a pool of negatives, add the hardest, retrain.

Round 0 trains on DATASETS.TRAIN and evaluates on DATASETS.TEST. Round k >= 1 scores the images
still in the pool with round k-1's model, moves the highest-scored ones (``pool_scoring``) into a
registered dataset ``hnm_mined_round_<k>`` that joins DATASETS.TRAIN, trains (a warm start from
round k-1's final weights with a fresh optimizer and schedule, or from scratch) and evaluates.
The pool is checked before round 0 trains: negative images only, none of them (by file) in
DATASETS.TRAIN.

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
from ..data import is_negative_image
from ..data.identity import image_identity
from .atomic import strict_json_value, write_json_atomically
from .checkpoint import AtomicDetectionCheckpointer
from .launcher import log_summary
from .mining_report import (
    MiningStateError,
    build_report,
    plot_curves,
    plot_mined_images,
    read_json,
)
from .pool_scoring import images_per_round, score_pool, select_hardest
from .trainer import HNMTrainer

__all__ = [
    "run_mining",
    "MiningLoop",
    "MiningLayout",
    "CandidatePool",
    "check_pool_outside_training_set",
    "register_mined_dataset",
    "mined_dataset_name",
    "scaled_schedule",
    "mining_settings",
    "check_settings",
]

logger = logging.getLogger(__name__)


class MiningLayout:
    """The paths of the mining loop's files under ``OUTPUT_DIR/mining``."""

    def __init__(self, output_dir):
        self.root = os.path.join(output_dir, "mining")
        self.settings = os.path.join(self.root, "settings.json")
        self.report = os.path.join(self.root, "report.json")
        self.curves = os.path.join(self.root, "curves.png")

    def round_dir(self, k):
        return os.path.join(self.root, f"round_{k}")

    def final_weights(self, k):
        return os.path.join(self.round_dir(k), "model_final.pth")

    def summary(self, k):
        return os.path.join(self.root, f"round_{k}.json")

    def selection(self, k):
        return os.path.join(self.root, f"round_{k}_selection.json")

    def mined_plot(self, k):
        return os.path.join(self.root, f"round_{k}_mined.png")


def _pool_records(dataset_name):
    if dataset_name not in DatasetCatalog.list():
        raise ValueError(
            f"Mining pool '{dataset_name}' (--negative-pool / HNM.MINING.POOL) is not a registered "
            "dataset: register it with --register-negatives NAME DIR, --register-coco, "
            "--register-voc, or --synthetic DIR (which registers synthetic_pool)."
        )
    records = DatasetCatalog.get(dataset_name)
    for index, record in enumerate(records):
        for field in ("file_name", "image_id"):
            if field not in record:
                raise ValueError(
                    f"Mining pool '{dataset_name}', record {index}: field '{field}' is missing. "
                    "Every pool image needs a file_name and an image_id."
                )
    _check_negatives_only(dataset_name, records)
    return records


def _check_negatives_only(dataset_name, records):
    # An image's score is its most confident detection: a false alarm on a negative image, but
    # mostly a correct detection on a positive one, which would be mined for being easy.
    positives = [record for record in records if not is_negative_image(record)]
    if positives:
        raise ValueError(
            f"Mining pool '{dataset_name}' (--negative-pool / HNM.MINING.POOL) has "
            f"{len(positives)} images with annotations among its {len(records)}, e.g. "
            f"{positives[0]['file_name']}: a pool holds negative images only, whose detections "
            "are all false alarms. Register only its negatives (--register-subset "
            f"{dataset_name}_negatives {dataset_name} negatives, then --negative-pool "
            f"{dataset_name}_negatives), or remove the annotated images from it."
        )


class CandidatePool:
    """The images of the pool datasets, keyed by file name, and which are still candidates.

    An image listed by two pool datasets is one candidate (the first dataset's record).
    """

    def __init__(self, dataset_names):
        self.names = tuple(dataset_names)
        self._entries = {}  # file_name -> (dataset name, record), in pool order
        listed = 0
        for name in self.names:
            for record in _pool_records(name):
                listed += 1
                self._entries.setdefault(record["file_name"], (name, record))
        if listed > len(self._entries):
            logger.warning(
                "Mining pool (%s): %d records repeat an image file of an earlier record; each "
                "image is a candidate once.",
                ", ".join(self.names),
                listed - len(self._entries),
            )
        self._taken = set()

    @property
    def total(self):
        """Images in the pool, taken or not."""
        return len(self._entries)

    def __len__(self):
        return len(self._entries) - len(self._taken)

    def images(self):
        """(dataset name, file_name) of every image in the pool, taken or not, in pool order."""
        return [(name, file_name) for file_name, (name, _) in self._entries.items()]

    def remaining(self):
        """The dataset records of the images not taken yet, in pool order."""
        return [r for f, (_, r) in self._entries.items() if f not in self._taken]

    def dataset_of(self, file_name):
        return self._entries[file_name][0]

    def take(self, file_names, selection_file):
        """Remove images from the candidates; returns their dataset records.

        Raises:
            MiningStateError: an image is not in the pool, or was taken before: the pool
                changed since ``selection_file`` was written.
        """
        unknown = [f for f in file_names if f not in self._entries or f in self._taken]
        if unknown:
            raise MiningStateError(
                f"{selection_file} chose {unknown[:3]} (and {max(len(unknown) - 3, 0)} more), "
                f"which are not candidates of the pool ({', '.join(self.names)}) at this round: "
                "the pool datasets changed since. Restore them, or start over with a new "
                "OUTPUT_DIR."
            )
        self._taken.update(file_names)
        return [self._entries[f][1] for f in file_names]


def check_pool_outside_training_set(pool_images, training_images):
    """Raise ValueError if an image file is both in the pool and in the training set.

    Images are the same when their files are (compared as real paths); image ids are not
    compared, since separate datasets may number their images alike.

    Args:
        pool_images (Iterable[tuple[str, str]]): (pool dataset name, file_name) of each image.
        training_images (Iterable[tuple[str, str]]): (training dataset name, file_name) of each
            image of DATASETS.TRAIN.

    Raises:
        ValueError: names the first shared file, its pool and training datasets, how many pool
            images are shared and the fix.
    """
    training = {}
    for dataset_name, file_name in training_images:
        training.setdefault(image_identity(file_name), dataset_name)
    shared = [(name, f) for name, f in pool_images if image_identity(f) in training]
    if not shared:
        return
    pool_name, file_name = shared[0]
    train_name = training[image_identity(file_name)]
    positives = f"{train_name}_positives"
    raise ValueError(
        f"Image {file_name} is in the mining pool '{pool_name}' and in the training set "
        f"'{train_name}' (DATASETS.TRAIN); pool images in the training set: {len(shared)}. "
        "Mining adds pool images to the training set, so the two must not share images: take "
        "them out of one, e.g. train on the positive images alone (--register-subset "
        f"{positives} {train_name} positives, then DATASETS.TRAIN '(\"{positives}\",)'), or "
        "pool other images."
    )


def _training_images(dataset_names):
    """(dataset name, file_name) of every image of the training datasets, in order."""
    images = []
    for name in dataset_names:
        for index, record in enumerate(DatasetCatalog.get(name)):
            if "file_name" not in record:
                raise ValueError(
                    f"Training dataset '{name}', record {index}: field 'file_name' is missing. "
                    "Every training image needs a file_name."
                )
            images.append((name, record["file_name"]))
    return images


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


# The config keys that shape what each round trains and chooses, as key prefixes (SEED: the
# initial weights and the data order).
_RECORDED_KEY_PREFIXES = ("MODEL.", "INPUT.", "SOLVER.", "DATALOADER.", "HNM.DATA.", "SEED")
# Keys of those nodes that a resume may change: they do not change what a round learns. The base
# MODEL.WEIGHTS is recorded: it initialises round 0 (and every round with FROM_SCRATCH); the
# weights of a warm-started round are the previous round's, set by the loop, not read from it.
_UNRECORDED_CONFIG_KEYS = frozenset(
    {
        "MODEL.DEVICE",  # a resume may run on other hardware
        # The stop message of a pool without detections invites lowering it and resuming.
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "SOLVER.CHECKPOINT_PERIOD",  # how often progress is saved
        "DATALOADER.NUM_WORKERS",  # how fast images are loaded
    }
)


def _flat_config(node, prefix=""):
    """The leaf keys of a config node by dotted name ("MODEL.HNM.ROI_OHEM.ENABLED")."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def mining_settings(cfg):
    """The settings that decide what each round chooses and trains: a resume must keep them.

    Returns:
        dict: the mining settings ("pool", "train_datasets", "per_round",
        "iterations_per_round", "from_scratch"), SEED, and every config key of the MODEL,
        INPUT, SOLVER, DATALOADER and HNM.DATA nodes by dotted name, but the few a resume may change
        (MODEL.DEVICE, ...). Values are as settings.json holds them (a tuple is a list, a
        non-finite float null), so a value read back equals the same value of a config.
    """
    settings = {
        "pool": list(cfg.HNM.MINING.POOL),
        "train_datasets": list(cfg.DATASETS.TRAIN),
        "per_round": cfg.HNM.MINING.PER_ROUND,
        "iterations_per_round": cfg.HNM.MINING.ITERS_PER_ROUND or cfg.SOLVER.MAX_ITER,
        "from_scratch": cfg.HNM.MINING.FROM_SCRATCH,
    }
    for key, value in _flat_config(cfg).items():
        if key.startswith(_RECORDED_KEY_PREFIXES) and key not in _UNRECORDED_CONFIG_KEYS:
            settings[key] = value
    return strict_json_value(settings)


def check_settings(recorded, settings, settings_file):
    """Raise MiningStateError naming the first setting that differs from the recorded run.

    A setting that ``recorded`` lacks is not checked: settings files of older versions record
    fewer settings, and resuming from them keeps working.
    """
    for key, value in settings.items():
        if key in recorded and recorded[key] != value:
            raise MiningStateError(
                f"{settings_file} records {key} = {recorded[key]!r}, but this run has {value!r}: "
                "the rounds already in that folder were mined with the recorded value. Run again "
                "with it to resume, or give a new OUTPUT_DIR to start over."
            )


def _main_process_value(value):
    """The main process's ``value`` on every process (the others pass None)."""
    return comm.all_gather(value)[0]


def _read_on_main_process(path):
    return _main_process_value(read_json(path) if comm.is_main_process() else None)


def _per_test_set(cfg, results):
    # HNMTrainer.train returns a lone test set's results unwrapped, and None without DATASETS.TEST.
    if not results:
        return {}
    if len(cfg.DATASETS.TEST) == 1:
        return {cfg.DATASETS.TEST[0]: results}
    return dict(results)


def _added_entry(pool, image):
    return {
        "dataset": pool.dataset_of(image["file_name"]),
        "file_name": image["file_name"],
        "image_id": image["image_id"],
        "score": image["score"],
    }


class MiningLoop:
    """Runs the rounds of one OUTPUT_DIR; see the module docstring. Use :func:`run_mining`."""

    def __init__(self, cfg):
        validate_hnm_config(cfg, prefix="HNM.MINING")
        if cfg.HNM.MINING.ROUNDS > 0 and not cfg.HNM.MINING.POOL:
            raise ValueError(
                f"HNM.MINING.ROUNDS = {cfg.HNM.MINING.ROUNDS} needs a pool of negative images: "
                "give --negative-pool NAME (or HNM.MINING.POOL), a registered dataset."
            )
        self._cfg = cfg
        self._layout = MiningLayout(cfg.OUTPUT_DIR)
        self._pool = CandidatePool(cfg.HNM.MINING.POOL)
        self._train_names = list(cfg.DATASETS.TRAIN)
        training_images = _training_images(self._train_names)
        # Before round 0 trains: a pool that cannot be mined fails now, not a round later.
        check_pool_outside_training_set(self._pool.images(), training_images)
        self._train_size = len(training_images)
        self._thing_classes = MetadataCatalog.get(self._train_names[0]).get("thing_classes")
        self._summaries = []

    def run(self):
        """Run (or resume) every round; returns the report (see ``build_report``)."""
        self._start_or_resume()
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
        return build_report(self._summaries, self._pool.names, self._rounds, stop_reason)

    @property
    def _rounds(self):
        return self._cfg.HNM.MINING.ROUNDS

    def _start_or_resume(self):
        settings = mining_settings(self._cfg)
        recorded = _read_on_main_process(self._layout.settings)
        if recorded is not None:
            check_settings(recorded, settings, self._layout.settings)
            logger.info("Resuming the mining rounds in %s.", self._layout.root)
        elif comm.is_main_process():
            write_json_atomically(self._layout.settings, settings)

    # ------------------------------------------------------------------ choosing images

    def _selection(self, k):
        """Round k's chosen images: the persisted selection, or a new one (scored now)."""
        selection = _read_on_main_process(self._layout.selection(k))
        if selection is not None:
            logger.info("Round %d: reusing the selection in %s.", k, self._layout.selection(k))
            return selection
        return _main_process_value(self._score_and_select(k))

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
        records = score_pool(
            model,
            self._pool.remaining(),
            self._cfg,
            description=f"Round {k}: scoring {len(self._pool)} pool images",
        )
        if not comm.is_main_process():
            return None
        count = images_per_round(self._cfg.HNM.MINING.PER_ROUND, self._train_size)
        chosen = select_hardest(records, count)
        if not chosen:
            threshold = self._cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
            return self._exhausted(
                k,
                f"none of the {len(records)} images left in the pool ({self._pool_description}) "
                f"gets a detection scored above MODEL.ROI_HEADS.SCORE_THRESH_TEST = {threshold} "
                f"from round {k - 1}'s model: the pool is exhausted (a lower threshold "
                "lets lower-scored images be mined)",
            )
        selection = {
            "round": k,
            "scored_with": self._layout.final_weights(k - 1),
            "images_scored": len(records),
            "images_with_detection": sum(r["score"] is not None for r in records),
            "images_wanted": count,
            "pool_size_before": len(self._pool),
            "pool_size_after": len(self._pool) - len(chosen),
            "images": [
                dict(_added_entry(self._pool, r), detections=r["detections"]) for r in chosen
            ],
        }
        write_json_atomically(self._layout.selection(k), selection)
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
        self._train_names.append(register_mined_dataset(k, records, self._thing_classes))
        self._train_size += len(records)
        scores = [image["score"] for image in selection["images"]]
        logger.info(
            "Round %d: %d pool images join the training set (scores %.3f to %.3f): %d training "
            "images, %d left in the pool.",
            k,
            len(records),
            max(scores),
            min(scores),
            self._train_size,
            len(self._pool),
        )

    # ------------------------------------------------------------------ training rounds

    def _finished_round(self, k):
        summary = _read_on_main_process(self._layout.summary(k))
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
        return _main_process_value(summary)

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
            plot_mined_images(
                selection["images"],
                MetadataCatalog.get(self._train_names[0]),
                self._layout.mined_plot(k),
                title=f"Round {k}: pool images added to the training set",
            )
        # Last: its presence marks the round as done.
        write_json_atomically(self._layout.summary(k), summary)

    def _write_report(self, stop_reason):
        if not comm.is_main_process():
            return
        report = build_report(self._summaries, self._pool.names, self._rounds, stop_reason)
        write_json_atomically(self._layout.report, report)
        plot_curves(report, self._layout.curves)


def run_mining(cfg):
    """Run the image-level mining loop of ``cfg``, resuming from its OUTPUT_DIR.

    Must be called on every process of a distributed run, after the pool and training datasets
    are registered in each.

    Args:
        cfg (CfgNode): a config with the hnm_d2 keys; HNM.MINING.* says what to mine (POOL,
            ROUNDS, PER_ROUND, ITERS_PER_ROUND, FROM_SCRATCH, SCORE_BATCH_SIZE).

    Returns:
        dict: the report, as written to OUTPUT_DIR/mining/report.json.

    Raises:
        HNMConfigError: an HNM.MINING value is out of range.
        ValueError: ROUNDS > 0 without a pool, a pool dataset is not registered or has images
            with annotations, or a pool image is also in DATASETS.TRAIN.
        MiningStateError: OUTPUT_DIR holds rounds mined with other settings or pool.
    """
    return MiningLoop(cfg).run()
