"""benchmarks/accuracy.py: what the "+ N negatives mined / random / mined, reviewed" settings
run (the commands, not the trainings): one round on the positives, then N of the training
negatives at a share of the pool, chosen by mining or at random, within the same budget as every
other setting; the reviewed run obeys verdicts on its mined twin's choice, from that run's start."""

import json
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


def rows_and_args(monkeypatch, tmp_path, settings, flags):
    """The rows and parsed arguments of accuracy.py asked for ``settings`` with ``flags``."""
    argv = ["accuracy.py", "--iters", "1000", "--output", str(tmp_path), "--settings"]
    monkeypatch.setattr(sys, "argv", argv + settings + flags)
    args = accuracy.parse_args()
    return accuracy.table_rows(args), args


@pytest.fixture(autouse=True)
def forget_benchmark_datasets():
    yield
    for name in list(DatasetCatalog.list()):  # registered to count the pool
        if name.startswith((accuracy.TRAIN, accuracy.TEST)):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


@pytest.fixture
def share_rows(monkeypatch, tmp_path):
    """The rows and parsed arguments of a command asking for the pair at two shares."""
    settings = ["negatives kept", "+ N negatives mined", "+ N negatives random"]
    return rows_and_args(monkeypatch, tmp_path, settings, ["--negatives-share", "0.1", "1.0"])


@pytest.fixture
def reviewed_rows(monkeypatch, tmp_path):
    """The rows and arguments of a mined run and its reviewed twin at a share of 10%."""
    settings = ["+ N negatives mined", "+ N negatives mined, reviewed"]
    flags = ["--negatives-share", "0.1", "--mined-verdicts", str(tmp_path / "s{seed}_{share}.json")]
    return rows_and_args(monkeypatch, tmp_path, settings, flags)


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


def test_the_reviewed_run_is_the_mined_run_obeying_the_verdicts_of_its_seed(reviewed_rows):
    (mined, reviewed), args = reviewed_rows
    assert (mined.folder, reviewed.folder) == (
        "N_negatives_mined_share0.1",
        "N_negatives_mined_share0.1_reviewed",  # the folder of the earlier hand-made runs
    )
    mined_command = accuracy.command_for(mined, 2, Path("out"), args)
    reviewed_command = accuracy.command_for(reviewed, 2, Path("out"), args)
    verdicts = str(Path(args.output) / "s2_0.1.json")
    assert option(reviewed_command, "--verdicts") == verdicts
    without = reviewed_command[:]
    del without[without.index("--verdicts") : without.index("--verdicts") + 2]
    assert without == mined_command


def twin_run(args, row, seed, with_weights):
    """A mined run stopped after choosing round 1's images: its files name its own folder."""
    twin = accuracy.run_dir(args, row._replace(setting=accuracy.MINED), seed)
    (twin / "mining" / "round_0").mkdir(parents=True)
    if with_weights:
        (twin / "mining" / "round_0" / "model_final.pth").write_bytes(b"weights")
    weights = f"{twin}/mining/round_0/model_final.pth"
    (twin / "mining" / "round_0.json").write_text(json.dumps({"weights": weights}))
    (twin / "mining" / "round_1_selection.json").write_text(json.dumps({"scored_with": weights}))
    (twin / "mining" / "settings.json").write_text(json.dumps({"per_round": 9.0}))
    return twin


@pytest.mark.parametrize("with_weights", [True, False])
def test_a_reviewed_run_starts_from_its_twins_choice(reviewed_rows, with_weights):
    (_, reviewed), args = reviewed_rows
    twin_run(args, reviewed, 0, with_weights)
    Path(args.output, "s0_0.1.json").write_text("{}")
    output_dir = accuracy.run_dir(args, reviewed, 0)
    accuracy.start_reviewed_run(args, reviewed, 0, output_dir)

    mining = output_dir / "mining"
    weights = f"{output_dir}/mining/round_0/model_final.pth"
    selection = json.loads((mining / "round_1_selection.json").read_text())
    assert selection == {"scored_with": weights}  # round 1 trains from this run's round 0
    assert json.loads((mining / "settings.json").read_text()) == {"per_round": 9.0}
    # Round 0 is reused where its weights are; else it trains again, the same training.
    assert (mining / "round_0.json").exists() == with_weights
    assert (mining / "round_0" / "model_final.pth").exists() == with_weights
    if with_weights:
        assert json.loads((mining / "round_0.json").read_text()) == {"weights": weights}


def test_a_reviewed_run_without_its_verdicts_or_its_twins_choice_says_what_to_do(reviewed_rows):
    (_, reviewed), args = reviewed_rows
    output_dir = accuracy.run_dir(args, reviewed, 0)
    with pytest.raises(SystemExit, match=r"no verdicts file .*s0_0\.1\.json.*review\.html"):
        accuracy.start_reviewed_run(args, reviewed, 0, output_dir)
    Path(args.output, "s0_0.1.json").write_text("{}")
    with pytest.raises(
        SystemExit, match=r'round_1_selection\.json is missing.*"\+ N negatives mined"'
    ):
        accuracy.start_reviewed_run(args, reviewed, 0, output_dir)
    assert not (output_dir / "mining").exists()
