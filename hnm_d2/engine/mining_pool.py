"""The mining pool: candidate negative images, checked against the training set before any
training, and taken out as they are mined.

An image is identified by its file (:func:`hnm_d2.data.identity.image_identity`), never by its
id: the pool may come from another dataset that numbers its images like the training set.
"""

import logging

from detectron2.data import DatasetCatalog

from ..data import is_negative_image
from ..data.identity import image_identity
from .mining_state import MiningStateError

__all__ = ["CandidatePool", "check_pool_outside_training_set", "open_checked_pool"]

logger = logging.getLogger(__name__)


def _pool_records(dataset_name):
    if dataset_name not in DatasetCatalog.list():
        raise ValueError(
            f"Mining pool '{dataset_name}' (--negative-pool / HNM.MINING.POOL) is not a registered "
            "dataset: register it with --register-negatives NAME DIR, --register-coco, "
            "--register-voc, --register-yolo, or --synthetic DIR (which registers "
            "synthetic_pool)."
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

    def set_aside(self, file_names):
        """Take out of the candidates those of ``file_names`` that are still among them, never
        to be chosen; the others (taken already, or not in the pool) are passed over.

        Returns:
            int: how many were set aside.
        """
        candidates = [f for f in file_names if f in self._entries and f not in self._taken]
        self._taken.update(candidates)
        return len(candidates)


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


def open_checked_pool(cfg):
    """The pool of HNM.MINING.POOL, checked against DATASETS.TRAIN before anything trains.

    Returns:
        tuple[CandidatePool, list]: the pool, and (dataset name, file_name) of every training
        image.

    Raises:
        ValueError: HNM.MINING.ROUNDS > 0 without a pool; a pool dataset is not registered,
            has an image with annotations, or shares an image with the training set.
    """
    if cfg.HNM.MINING.ROUNDS > 0 and not cfg.HNM.MINING.POOL:
        raise ValueError(
            f"HNM.MINING.ROUNDS = {cfg.HNM.MINING.ROUNDS} needs a pool of negative images: "
            "give --negative-pool NAME (or HNM.MINING.POOL), a registered dataset."
        )
    pool = CandidatePool(cfg.HNM.MINING.POOL)
    training_images = _training_images(cfg.DATASETS.TRAIN)
    check_pool_outside_training_set(pool.images(), training_images)
    return pool, training_images
