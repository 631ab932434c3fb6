"""Scoring a pool of candidate images with a detector, and choosing the hardest of them (or,
as a control, as many at random).

An image's *hardness* is its highest detection score: on a negative image every detection is a
false alarm, and the most confident one is what the detector gets most wrong. An image without
any detection (none above ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``) has nothing to learn from and
is never chosen.

HNM.MINING.SELECTION "random" is the control that asks whether choosing by score beats chance:
it draws the same number of images uniformly from the same candidates (the scored images with
a detection), with a generator seeded from SEED and the round or step, so a run repeats its
draws. Only the choice differs from "hardest" (the default); the pool is still scored, so the
reports show the drawn images' scores beside what mining would have chosen.

Distributed: every process scores its own shard of the pool (detectron2's ``InferenceSampler``
splits it); the per-image records are gathered on the main process, which alone ranks and
selects. The ranking and selection are pure functions of those records.
"""

import math

import numpy as np
import torch
from detectron2.evaluation import inference_context
from detectron2.utils import comm
from tqdm import tqdm

from ..compat import build_batched_test_loader
from ..data import NegativeAwareDatasetMapper

__all__ = [
    "mine_pool",
    "score_pool",
    "image_record",
    "rank_by_score",
    "images_per_round",
    "select_hardest",
    "select_at_random",
    "draw_seed",
]

# Detections kept per image, best first. Only the ranking score is needed to choose images; the
# few best boxes are kept so the mined images can be drawn later without running the model again.
KEPT_DETECTIONS = 5


def image_record(dataset_dict, instances):
    """What scoring remembers about one image.

    Args:
        dataset_dict (dict): the image's dataset record; "file_name" and "image_id" are read.
        instances (Instances): the model's detections on it, in original image coordinates,
            with fields pred_boxes (R, 4), scores (R,) and pred_classes (R,).

    Returns:
        dict: "file_name", "image_id", "score" (the highest detection score, or None without
        detections) and "detections" (the best ``KEPT_DETECTIONS``: "boxes" as XYXY_ABS lists,
        "scores", "classes").
    """
    scores = instances.scores.detach().cpu()
    kept = scores.argsort(descending=True)[:KEPT_DETECTIONS]
    return {
        "file_name": dataset_dict["file_name"],
        "image_id": dataset_dict["image_id"],
        "score": float(scores.max()) if len(scores) else None,
        "detections": {
            "boxes": instances.pred_boxes.tensor.detach().cpu()[kept].tolist(),
            "scores": scores[kept].tolist(),
            "classes": instances.pred_classes.detach().cpu()[kept].tolist(),
        },
    }


def score_pool(model, pool_dicts, cfg, description="Scoring pool"):
    """Run the detector on every pool image, sharded across processes, batched.

    Must be called on every process: the records are gathered with a collective call.

    Args:
        model (nn.Module): a detectron2 detector; it is put in eval mode for the duration.
        pool_dicts (list[dict]): the dataset records of the images to score, in the same order
            on every process.
        cfg (CfgNode): test-time input settings (INPUT.*), DATALOADER.NUM_WORKERS and
            HNM.MINING.SCORE_BATCH_SIZE (images per forward pass).
        description (str): label of the progress bar (main process only).

    Returns:
        list[dict]: on the main process, one :func:`image_record` per pool image in pool order;
        an empty list on the other processes.
    """
    loader = build_batched_test_loader(
        pool_dicts,
        # The stock test-time mapping, with an error that names an unreadable image's file
        # and id.
        mapper=NegativeAwareDatasetMapper(cfg, is_train=False),
        batch_size=cfg.HNM.MINING.SCORE_BATCH_SIZE,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    records = []
    progress = tqdm(loader, desc=description, unit="batch", disable=not comm.is_main_process())
    with inference_context(model), torch.no_grad():
        for inputs in progress:
            outputs = model(inputs)
            records.extend(image_record(x, y["instances"]) for x, y in zip(inputs, outputs))
    # InferenceSampler gives each rank a contiguous slice in rank order: concatenating the
    # gathered lists restores the pool order.
    return [record for rank_records in comm.gather(records, dst=0) for record in rank_records]


def rank_by_score(records):
    """Images with a detection, hardest first.

    Args:
        records (list[dict]): :func:`image_record` outputs.

    Returns:
        list[dict]: the records whose "score" is not None, by decreasing score; equal scores
        are ordered by file name, so the ranking does not depend on how the pool was sharded.
    """
    detected = [r for r in records if r["score"] is not None]
    return sorted(detected, key=lambda r: (-r["score"], r["file_name"]))


def images_per_round(per_round, train_size):
    """How many images a round adds.

    Args:
        per_round (float): HNM.MINING.PER_ROUND: a whole count >= 1, or a fraction in (0, 1)
            of the current training set.
        train_size (int): images in the current training set.

    Returns:
        int: the count itself, or the fraction of ``train_size`` rounded half up, at least 1.

    Raises:
        ValueError: a count >= 1 that is not a whole number.
    """
    if per_round >= 1:
        if per_round != int(per_round):
            raise ValueError(
                f"HNM.MINING.PER_ROUND (--per-round) = {per_round} is neither a whole count nor "
                "a fraction: give a whole number of images >= 1, or a fraction in (0, 1) of the "
                "training set."
            )
        return int(per_round)
    return max(1, math.floor(per_round * train_size + 0.5))


def select_hardest(records, count):
    """The ``count`` hardest images (fewer when fewer have a detection).

    Args:
        records (list[dict]): :func:`image_record` outputs of the remaining pool.
        count (int): images wanted.

    Returns:
        list[dict]: at most ``count`` records, hardest first; never one without a detection.
    """
    return rank_by_score(records)[:count]


def select_at_random(records, count, seed):
    """``count`` images drawn uniformly, without replacement, from those :func:`select_hardest`
    chooses from (fewer when fewer have a detection): the control for mining's choice.

    Args:
        records (list[dict]): :func:`image_record` outputs of the remaining pool.
        count (int): images wanted.
        seed (list[int]): seeds numpy's generator (:func:`draw_seed`).

    Returns:
        list[dict]: the drawn records, ordered as :func:`rank_by_score` orders them (hardest
        first), so reports and plots read as a mined round's. The candidates are drawn from in
        that order too, so the draw does not depend on how the pool was sharded.
    """
    candidates = rank_by_score(records)
    size = min(count, len(candidates))
    drawn = np.random.default_rng(seed).choice(len(candidates), size=size, replace=False)
    return [candidates[i] for i in sorted(drawn.tolist())]


def draw_seed(cfg, step):
    """The seed of a random selection: [SEED, step], or with SEED < 0 (detectron2's "a new
    seed every run") [fresh entropy, step]. Either way it is written with the selection.

    Args:
        cfg (CfgNode): SEED.
        step (int): the mining round (rounds) or step (online), from 1: each draws anew.
    """
    base = cfg.SEED if cfg.SEED >= 0 else int(np.random.SeedSequence().entropy)
    return [base, step]


def mine_pool(model, pool, cfg, train_size, description, step):
    """One mining step of either mode: score the images left in ``pool``, choose the hardest
    (or, with HNM.MINING.SELECTION "random", draw as many at random).

    Must be called on every process (the scoring is distributed). The chosen images stay in
    the pool: the caller takes them once the choice is final.

    Args:
        model (nn.Module): the detector to score with.
        pool (CandidatePool): the candidates (:mod:`hnm_d2.engine.mining_pool`).
        cfg (CfgNode): HNM.MINING.PER_ROUND, HNM.MINING.SELECTION, HNM.MINING.SCORE_BATCH_SIZE,
            SEED and the test-time input.
        train_size (int): images trained on now, for a PER_ROUND fraction.
        description (str): the progress bar's label.
        step (int): the round (step) number, from 1, which seeds a random selection.

    Returns:
        dict or None: on the main process "images_scored", "images_with_detection",
        "images_wanted", "pool_size_before", "pool_size_after" and "images" (per chosen image,
        hardest first: "dataset", "file_name", "image_id", "score", "detections"); with
        SELECTION "random" also "selection" and "draw_seed"; None on the other processes.
    """
    records = score_pool(model, pool.remaining(), cfg, description=description)
    if not comm.is_main_process():
        return None
    count = images_per_round(cfg.HNM.MINING.PER_ROUND, train_size)
    drawn = {}
    if cfg.HNM.MINING.SELECTION == "random":
        drawn = {"selection": "random", "draw_seed": draw_seed(cfg, step)}
        chosen = select_at_random(records, count, drawn["draw_seed"])
    else:
        chosen = select_hardest(records, count)
    return {
        "images_scored": len(records),
        "images_with_detection": sum(r["score"] is not None for r in records),
        "images_wanted": count,
        "pool_size_before": len(pool),
        "pool_size_after": len(pool) - len(chosen),
        **drawn,
        "images": [{"dataset": pool.dataset_of(r["file_name"]), **r} for r in chosen],
    }
