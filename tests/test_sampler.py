"""NegativeShareTrainingSampler: negative share, sharding, determinism; the train loader."""

import itertools

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.samplers import TrainingSampler

from hnm_d2.config import add_hnm_config
from hnm_d2.data import (
    NegativeShareTrainingSampler,
    build_hnm_train_loader,
    build_training_sampler,
    register_negative_folder,
)

# 10 positives, 5 negatives, interleaved so that group membership is not index order.
IS_NEGATIVE = [i % 3 == 2 for i in range(15)]
DRAWS = 20000


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def negative_share(indices):
    return sum(IS_NEGATIVE[i] for i in indices) / len(indices)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 1.0])
def test_negative_share_matches_fraction(fraction):
    sampler = NegativeShareTrainingSampler(IS_NEGATIVE, fraction, seed=0, rank=0, world_size=1)
    # Binomial standard deviation at 0.5 over 20000 draws is 0.0035; 0.015 is over 4 of them.
    assert negative_share(take(sampler, DRAWS)) == pytest.approx(fraction, abs=0.015)


def test_each_group_is_visited_evenly():
    indices = take(NegativeShareTrainingSampler(IS_NEGATIVE, 0.5, seed=1, world_size=1), 3000)
    negatives = [i for i in indices if IS_NEGATIVE[i]]
    # Each pass through the 5 negatives is a permutation of them.
    for start in range(0, 50, 5):
        assert sorted(negatives[start : start + 5]) == [2, 5, 8, 11, 14]


def test_two_ranks_get_disjoint_interleaved_shards_of_one_stream():
    full = take(NegativeShareTrainingSampler(IS_NEGATIVE, 0.3, seed=5, rank=0, world_size=1), 200)
    shards = [
        take(NegativeShareTrainingSampler(IS_NEGATIVE, 0.3, seed=5, rank=r, world_size=2), 100)
        for r in (0, 1)
    ]
    assert shards[0] == full[0::2]
    assert shards[1] == full[1::2]


def test_same_seed_same_stream_other_seed_other_stream():
    def stream(seed):
        return take(NegativeShareTrainingSampler(IS_NEGATIVE, 0.5, seed=seed, world_size=1), 500)

    assert stream(3) == stream(3)
    assert stream(3) != stream(4)


def test_unshuffled_groups_cycle_in_index_order():
    sampler = NegativeShareTrainingSampler(IS_NEGATIVE, 1.0, shuffle=False, seed=0, world_size=1)
    assert take(sampler, 7) == [2, 5, 8, 11, 14, 2, 5]


def test_fraction_asking_for_an_empty_group_names_the_counts():
    with pytest.raises(ValueError, match="0 negative and 4 positive images"):
        NegativeShareTrainingSampler([False] * 4, 0.3, seed=0)
    with pytest.raises(ValueError, match="3 negative and 0 positive images"):
        NegativeShareTrainingSampler([True] * 3, 0.9, seed=0)
    only_positives = NegativeShareTrainingSampler([False] * 4, 0.0, seed=0, world_size=1)
    assert sorted(take(only_positives, 8)) == [0, 0, 1, 1, 2, 2, 3, 3]
    only_negatives = NegativeShareTrainingSampler([True] * 3, 1.0, seed=0, world_size=1)
    assert sorted(take(only_negatives, 6)) == [0, 0, 1, 1, 2, 2]


def hnm_cfg(train, fraction):
    cfg = get_cfg()
    add_hnm_config(cfg)
    cfg.DATASETS.TRAIN = train
    cfg.HNM.DATA.NEGATIVE_FRACTION = fraction
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    return cfg


def test_build_training_sampler_follows_the_config():
    dicts = [{"annotations": [] if negative else [{"iscrowd": 0}]} for negative in IS_NEGATIVE]
    natural = build_training_sampler(hnm_cfg((), -1.0), dicts)
    assert type(natural) is TrainingSampler
    shared = build_training_sampler(hnm_cfg((), 1.0), dicts)
    assert isinstance(shared, NegativeShareTrainingSampler)
    assert all(IS_NEGATIVE[i] for i in take(shared, 50))
    cfg = hnm_cfg((), 0.5)
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    with pytest.raises(ValueError, match="DATALOADER.SAMPLER_TRAIN"):
        build_training_sampler(cfg, dicts)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_train_loader_draws_the_configured_share(synthetic_datasets, fraction):
    loader = build_hnm_train_loader(hnm_cfg((synthetic_datasets["train"],), fraction))
    batches = list(itertools.islice(iter(loader), 2))
    boxes_per_image = [len(d["instances"]) for batch in batches for d in batch]
    assert len(boxes_per_image) == 8
    if fraction == 1.0:
        assert boxes_per_image == [0] * 8
    else:
        assert min(boxes_per_image) >= 1
    assert all("transforms" in d for batch in batches for d in batch)


def test_train_loader_takes_datasets_that_share_image_ids(
    synthetic_datasets, synthetic_root, dataset_name
):
    # Stock detectron2 trains on them (separate COCO files all number from 1); hnm_d2 tells
    # the images apart by their files.
    train = synthetic_datasets["train"]
    first_train_id = min(d["image_id"] for d in DatasetCatalog.get(train))
    clash = register_negative_folder(
        dataset_name(), synthetic_root / "pool", ["target"], id_offset=first_train_id
    )
    loader = build_hnm_train_loader(hnm_cfg((train, clash), -1.0))
    batch = next(iter(loader))
    assert len(batch) == 4 and all("file_name" in d and "transforms" in d for d in batch)
