"""The cross-batch memory of hard negatives (MODEL.HNM.FEATURE_MEMORY): bookkeeping,
the loss it adds (normaliser by hand), and stock losses while it is empty."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from helpers import needs_sigmoid_ce
from test_heads import HEIGHT, WIDTH, assert_same_losses, batch, seeded_model
from test_heads import tiny_cfg as heads_cfg
from torch.nn import functional as F

from hnm_d2.config import HNMConfigError
from hnm_d2.modeling.feature_memory import HardNegativeFeatureMemory

FEATURES = {"MODEL.HNM.FEATURE_MEMORY.ENABLED": True}


def new_memory(**kwargs):
    args = dict(capacity=4, max_age=10, score_thresh=0.5, per_iter=2, warmup_iters=0)
    return HardNegativeFeatureMemory(**{**args, **kwargs})


def features(*values):
    """One (1, 1, 1) feature map per value, so entries are recognisable by their value."""
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1)


def values(memory):
    return memory.features.flatten().tolist()


def test_only_hard_entries_after_the_warm_up_are_kept_newest_first_up_to_capacity():
    memory = new_memory(warmup_iters=2)
    memory.add(features(1, 2), torch.tensor([0.9, 0.9]), iteration=1)  # warm-up: ignored
    assert memory.num_entries == 0
    memory.add(features(3, 4, 5), torch.tensor([0.9, 0.4, 0.6]), iteration=2)  # 4 is easy
    memory.add(features(6, 7, 8), torch.tensor([0.7, 0.8, 0.5]), iteration=3)
    # Newest first, hardest first within an iteration; capacity 4: the oldest, 5, left.
    assert values(memory) == [7, 6, 8, 3]
    assert memory.iterations.tolist() == [3, 3, 3, 2]


def test_entries_expire_and_leave_once_rescored_easy():
    memory = new_memory()
    memory.add(features(1), torch.tensor([0.9]), iteration=0)
    memory.add(features(2, 3), torch.tensor([0.9, 0.8]), iteration=5)
    memory.expire(10)
    assert values(memory) == [2, 3, 1]
    memory.expire(11)
    assert values(memory) == [2, 3]
    memory.rescore(torch.tensor([0]), torch.tensor([0.2]))  # 2 is easy now
    assert values(memory) == [3] and memory.scores.tolist() == [pytest.approx(0.8)]


def test_sample_draws_at_most_per_iter_distinct_entries():
    memory = new_memory(per_iter=2)
    assert len(memory.sample(iteration=0)) == 0
    memory.add(features(1, 2, 3), torch.full((3,), 0.9), iteration=0)
    indices = memory.sample(iteration=7)
    assert len(indices) == 2 and len(set(indices.tolist())) == 2
    assert torch.equal(memory.sample(iteration=7), indices)  # every rank draws the same


def test_an_empty_memory_leaves_the_stock_losses_to_the_bit():
    stock_model = seeded_model(heads_cfg(hnm=False))
    options = {**FEATURES, "MODEL.HNM.FEATURE_MEMORY.WARMUP_ITERS": 100}
    model = seeded_model(heads_cfg(**options))
    # Two iterations: nothing is recorded during the warm-up, so nothing is re-fed after it.
    for iteration in range(2):
        torch.manual_seed(123)
        with EventStorage(start_iter=iteration):
            losses = model(batch())
        torch.manual_seed(123)
        with EventStorage(start_iter=iteration):
            assert_same_losses(losses, stock_model(batch()))
    assert model.roi_heads.feature_memory.num_entries == 0


def test_re_fed_entries_join_the_classification_loss_with_the_stated_normaliser():
    options = {"MODEL.HNM.FEATURE_MEMORY.SCORE_THRESH": 0.0, "MODEL.HNM.ROI_BG_WEIGHT": 0.5}
    heads = seeded_model(heads_cfg(**FEATURES, **options)).roi_heads
    heads.box_predictor.loss_weight["loss_cls"] = 2.0
    memory = heads.feature_memory
    channels, size = 32, heads.box_pooler.output_size[0]
    entries = torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(0))
    memory.add(entries, torch.full((3,), 0.9), iteration=0)
    proposals = [Instances((HEIGHT, WIDTH)) for _ in range(2)]
    for p, n in zip(proposals, (5, 7)):
        p.gt_classes = torch.zeros(n, dtype=torch.int64)  # R = 12 sampled RoIs
    with EventStorage(start_iter=5):
        combined = heads._train_on_memory(torch.tensor(0.3), None, proposals)
    refed = memory.sample(iteration=5)  # the same draw
    logits, _ = heads.box_predictor(heads.box_head(entries[refed]))
    background = torch.full((len(refed),), heads.num_classes)
    # Background weight 0.5 on each entry's cross-entropy, loss weight 2, R = 12 RoIs.
    memory_loss = 2.0 * 0.5 * F.cross_entropy(logits, background, reduction="sum")
    expected = (12 * 0.3 + memory_loss) / (12 + len(refed))
    torch.testing.assert_close(combined, expected)


def test_a_few_iterations_fill_and_re_feed_the_memory():
    model = seeded_model(heads_cfg(**FEATURES, **{"MODEL.HNM.FEATURE_MEMORY.SCORE_THRESH": 0.0}))
    with EventStorage() as storage:
        for _ in range(2):
            losses = model(batch())
            sum(losses.values()).backward()
            storage.step()
        refed = storage.history("hnm/memory_refed").values()
    assert [v for v, _ in refed] == [0, 64]  # the first iteration finds the memory empty
    assert model.roi_heads.feature_memory.num_entries > 0


@needs_sigmoid_ce
def test_memory_refuses_sigmoid_cross_entropy():
    cfg = heads_cfg(**FEATURES, **{"MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": True})
    with pytest.raises(HNMConfigError, match="FEATURE_MEMORY.ENABLED.*use_sigmoid_ce=True"):
        build_model(cfg)


RENAMED = [
    ("MODEL.HNM.BUFFER.MODE", "features", "MODEL.HNM.FEATURE_MEMORY.ENABLED"),
    ("MODEL.HNM.BUFFER.FEATURES_PER_ITER", 32, "MODEL.HNM.FEATURE_MEMORY.PER_ITER"),
]


@pytest.mark.parametrize("old, value, new", RENAMED)
def test_a_config_file_with_a_replaced_key_fails_naming_its_replacement(tmp_path, old, value, new):
    config_file = tmp_path / "old.yaml"
    config_file.write_text(f"MODEL:\n  HNM:\n    BUFFER:\n      {old.split('.')[-1]}: {value}\n")
    cfg = heads_cfg()
    with pytest.raises(KeyError, match=f"{old} was renamed to {new}"):
        cfg.merge_from_file(str(config_file))
    with pytest.raises(KeyError, match=f"{old} was renamed to {new}"):
        cfg.merge_from_list([old, value])


@pytest.mark.parametrize("old, value, new", RENAMED)
def test_a_replaced_key_set_on_the_config_fails_at_build_time_naming_its_replacement(
    old, value, new
):
    cfg = heads_cfg()
    setattr(cfg.MODEL.HNM.BUFFER, old.split(".")[-1], value)
    with pytest.raises(HNMConfigError, match=f"{old} was replaced by {new}"):
        build_model(cfg)


def test_the_buffer_and_the_memory_together_are_refused():
    cfg = heads_cfg(**FEATURES, **{"MODEL.HNM.BUFFER.ENABLED": True})
    with pytest.raises(HNMConfigError, match="BUFFER.ENABLED and .*FEATURE_MEMORY.ENABLED"):
        build_model(cfg)


def test_the_memory_needs_the_hnm_heads_but_not_the_hnm_meta_architecture():
    stock_heads = heads_cfg(**FEATURES, **{"MODEL.ROI_HEADS.NAME": "StandardROIHeads"})
    with pytest.raises(HNMConfigError, match="FEATURE_MEMORY.ENABLED.*'HNMROIHeads'"):
        build_model(stock_heads)
    # The memory keys no image: GeneralizedRCNN, which hands the heads no inputs, trains it.
    model = seeded_model(heads_cfg(**FEATURES, **{"MODEL.META_ARCHITECTURE": "GeneralizedRCNN"}))
    with EventStorage():
        assert all(torch.isfinite(v) for v in model(batch()).values())
