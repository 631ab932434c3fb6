"""benchmarks/accuracy.py: what the "+ N negatives mined / random" settings run (the commands,
not the trainings): one round on the positives, then N of the training negatives at a share of
the pool, chosen by mining or at random, within the same budget as every other setting."""

import sys
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from helpers import REPO, load_script

sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its neighbours
accuracy = load_script("benchmarks/accuracy.py")
BCCD = accuracy.presets.DEFAULT_ROOTS["bccd"]
BCCD_TRAIN_NEGATIVES = 88  # BCCD's train split (docs/BENCHMARKS.md)
pytestmark = pytest.mark.skipif(
    not BCCD.is_dir(), reason=f"BCCD is not at {BCCD} (shared benchmark data)"
)


@pytest.fixture
def share_rows(monkeypatch, tmp_path):
    """The rows and parsed arguments of a command asking for the pair at two shares."""
    argv = ["accuracy.py", "--iters", "1000", "--output", str(tmp_path), "--settings"]
    argv += ["negatives kept", "+ N negatives mined", "+ N negatives random"]
    monkeypatch.setattr(sys, "argv", argv + ["--negatives-share", "0.1", "1.0"])
    args = accuracy.parse_args()
    yield accuracy.table_rows(args), args
    for name in list(DatasetCatalog.list()):  # registered to count the pool
        if name.startswith((accuracy.TRAIN, accuracy.TEST)):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def option(command, flag):
    return command[command.index(flag) + 1]


def test_a_row_per_share_with_n_the_share_of_the_training_negatives(share_rows):
    rows, _ = share_rows
    assert [(r.setting, r.share, r.count) for r in rows] == [
        ("negatives kept", None, None),
        ("+ N negatives mined", 0.1, 9),  # 8.8, rounded half up
        ("+ N negatives mined", 1.0, BCCD_TRAIN_NEGATIVES),
        ("+ N negatives random", 0.1, 9),
        ("+ N negatives random", 1.0, BCCD_TRAIN_NEGATIVES),
    ]
    assert rows[0].folder == "negatives_kept"  # the folders of earlier runs are kept
    assert len({r.folder for r in rows}) == len(rows)
    assert rows[1].label == "+ N negatives mined, 10% of the pool (N = 9 of 88)"


def test_mined_and_random_differ_in_the_choice_alone_within_the_same_budget(share_rows):
    rows, args = share_rows
    mined, random = (accuracy.command_for(r, 0, Path("out"), args) for r in (rows[1], rows[3]))
    difference = [(a, b) for a, b in zip(mined, random) if a != b]
    assert len(mined) == len(random) and difference == [("hardest", "random")]
    assert option(mined, "--selection") == "hardest"
    # Round 0 on the positives, round 1 adds the 9: two rounds of half the budget each.
    assert (option(mined, "--rounds"), option(mined, "--per-round")) == ("1", "9")
    assert (
        option(mined, "--iters-per-round") == "500" and option(mined, "SOLVER.MAX_ITER") == "1000"
    )
    assert option(mined, "DATASETS.TRAIN") == f'("{accuracy.TRAIN}_positives",)'
    assert option(mined, "--negative-pool") == f"{accuracy.TRAIN}_negatives"
