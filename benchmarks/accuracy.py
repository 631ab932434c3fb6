#!/usr/bin/env python
"""Accuracy benchmark on real data: every setting side by side, at the same operating point.

Trains the small CPU config from scratch with the same iteration budget per setting (for
image-level mining, the rounds together use the same total) for several seeds, evaluates, and
prints one table, mean and spread (sample standard deviation) over seeds: AP / AP50 on the
positive test images, AP on the whole test set, false alarms per negative test image at recall
0.8 and 0.9 (the threshold that finds that share of the objects; "n/a" where a seed never
reaches it, with the count of seeds that do) and at score 0.5, the log-average miss rate
MR^-2, the share of negative test images with an alarm at 0.5, and the run time. A second table
gives each setting's operating points: the score of its recall-0.9 threshold and the recall at
score 0.5, beside its alarms at both. It also draws the settings' FROC curves (recall averaged
over seeds) in one PNG.

Data (benchmarks/presets.py): ``--dataset bccd`` (the default), BCCD Platelets in its official
splits; ``--dataset txl_pbc``, TXL-PBC Platelets, with a fixed 20% of its train split to choose
settings on and its val + test splits to report, and a table of false alarms per source;
``--dataset custom --train FORMAT ARGS... --test FORMAT ARGS...``, any COCO, VOC or YOLO pair
whose images without an object of the classes are negatives. ``--split val`` evaluates on the
split that settings are chosen on, ``--split test`` on the one whose figures are reported.

What each setting trains on, all with the same total budget of ``--iters`` iterations:

- "stock (negatives filtered)": stock detectron2's classes, the positive training images only
  (detectron2 drops images without annotations); "negatives kept": the hnm_d2 classes, every
  training image; each "+ ..." head mechanism: every training image, its config in configs/
  ("+ negative-image top-k loss": hnm_R18_FPN_cpu_negative_topk.yaml, the loss on each
  negative image's 8 highest-scored proposals).
- "+ image-level mining (rounds)": the positive training images, then ``--mining-rounds``
  rounds that each add ``--mining-per-round`` of the training negatives (the pool) that the
  model fires on most; the rounds share the budget (``--iters // (rounds + 1)`` each, warm
  starts). "(online)": the same additions inside one schedule of ``--iters``.
- "+ N negatives mined" / "+ N negatives random" (one row per ``--negatives-share``): the
  regime of a negative pool too large to train on. Round 0 trains on the positive training
  images for ``--iters // 2`` iterations; round 1 scores the training negatives with that
  model, adds N of them, N the share of the pool (rounded half up), and trains ``--iters // 2``
  more from round 0's weights. "mined" adds the N the model fires on most, "random" N drawn
  uniformly from the same candidates (``--selection random``, seeded by the seed), so the pair
  differs only in the choice. Both choose among the pool images with a detection (score >=
  0.01): at share 1.0 both add all of those, a check that the pair agrees where there is
  nothing to choose. Round 0 is the same training (config and seed) for both and for every
  share; each run trains it again.
- "+ N negatives mined, reviewed": "+ N negatives mined" with a person's verdicts on the images
  it chose obeyed (``--mined-verdicts``, the review page's export; hnm_d2.engine.verdicts): the
  images judged to hold a platelet or unsure leave training, the boxes judged false alarms train
  as background. It starts from its mined twin's round 0 and round 1 selection (run that
  setting first, with the same seed and share), so the pair differs only in the verdicts.

Resumable: a run whose output directory holds its time (seconds.txt) is reused, so the table
can be completed over several sittings; with ``--records benchmarks/records`` every finished run
is also kept as a record (benchmarks/run_records.py) and restored from there into a fresh
checkout. ``--curve`` trains the given settings once with an
evaluation every ``--eval-period`` iterations and plots AP50 against the iteration, to show
the budget at which stock detectron2 has plateaued. ``--verdicts FILE`` adds the false alarms
at recall 0.9 without those a person judged unannotated objects (benchmarks/negative_audit.py).

    .venv/bin/python benchmarks/accuracy.py --split test --iters 1500 --seeds 0 1 2 \
        --jobs 2 --output output/bench_bccd
    .venv/bin/python benchmarks/accuracy.py --dataset txl_pbc --split val --iters 2000 \
        --seeds 0 --output output/bench_txl
    .venv/bin/python benchmarks/accuracy.py --dataset txl_pbc --split val --iters 2000 \
        --seeds 0 --settings "+ N negatives mined" "+ N negatives random" \
        --negatives-share 0.1 0.25 0.5 1.0 --output output/bench_txl
    .venv/bin/python benchmarks/accuracy.py --dataset txl_pbc --split test --iters 2000 \
        --seeds 0 --settings "+ N negatives mined" "+ N negatives mined, reviewed" \
        --mined-verdicts benchmarks/audits/txl_pbc_test_mined_seed{seed}_verdicts.json \
        --records benchmarks/records
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, NamedTuple, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import presets  # noqa: E402
import run_records  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from negative_audit import Run, final_training, load_verdicts, recount  # noqa: E402

from hnm_d2.data.command_line import add_registration_arguments, register_from_args  # noqa: E402
from hnm_d2.evaluation.froc import load_curve  # noqa: E402

TRAIN, TEST = "bench_train", "bench_test"
STOCK_ARCH = [
    "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
    "MODEL.PROPOSAL_GENERATOR.NAME", "RPN",
    "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
]  # fmt: skip
# The same for every setting: detections down to score 0.01, so that the recall levels are
# reached by the threshold that reaches them, not cut by the model's floor. (For image-level
# mining it also decides which pool images have a detection at all, hence can be mined.)
EVAL_OPTS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"]


class Setting(NamedTuple):
    config: str
    opts: List[str] = []
    # Image-level mining: "rounds" (retrain), "online", or "share" (one round that adds a share
    # of the pool at once, see the module docstring).
    mining: Optional[str] = None
    selection: str = "hardest"  # HNM.MINING.SELECTION of a "share" setting
    # A "share" setting that obeys a person's verdicts on the images its mined twin chose.
    reviewed: bool = False


SETTINGS = {
    "stock (negatives filtered)": Setting(
        "configs/hnm_R18_FPN_cpu.yaml", STOCK_ARCH + ["DATALOADER.FILTER_EMPTY_ANNOTATIONS", "True"]
    ),
    "negatives kept": Setting("configs/hnm_R18_FPN_cpu.yaml"),
    "+ background down-weighting": Setting("configs/hnm_R18_FPN_cpu_bg_weight.yaml"),
    "+ OHEM": Setting("configs/hnm_R18_FPN_cpu_ohem.yaml"),
    "+ buffer (boxes)": Setting("configs/hnm_R18_FPN_cpu_buffer.yaml"),
    # The feature memory, under its first name: the name makes the run's folder.
    "+ buffer (features)": Setting("configs/hnm_R18_FPN_cpu_feature_memory.yaml"),
    "+ all head mechanisms": Setting("configs/hnm_R18_FPN_cpu_all.yaml"),
    "+ negative-image top-k loss": Setting("configs/hnm_R18_FPN_cpu_negative_topk.yaml"),
    "+ image-level mining (rounds)": Setting("configs/hnm_R18_FPN_cpu.yaml", mining="rounds"),
    "+ image-level mining (online)": Setting("configs/hnm_R18_FPN_cpu.yaml", mining="online"),
    "+ N negatives mined": Setting("configs/hnm_R18_FPN_cpu.yaml", mining="share"),
    "+ N negatives random": Setting(
        "configs/hnm_R18_FPN_cpu.yaml", mining="share", selection="random"
    ),
    "+ N negatives mined, reviewed": Setting(
        "configs/hnm_R18_FPN_cpu.yaml", mining="share", reviewed=True
    ),
}
MINED = "+ N negatives mined"  # the setting whose chosen images a reviewed setting obeys on


class Row(NamedTuple):
    """One row of the table: a setting, and for a "share" setting the share of the pool and
    N, the negatives it adds."""

    label: str
    setting: str
    share: Optional[float] = None
    count: Optional[int] = None

    @property
    def folder(self):
        """The name of the row's run folders (without the seed)."""
        name = self.setting.removesuffix(", reviewed")
        slug = name.strip("+ ").replace(" (", "_").strip(")").replace(" ", "_").replace("-", "_")
        if self.share is not None:
            slug += f"_share{self.share:g}"
        return slug + "_reviewed" if SETTINGS[self.setting].reviewed else slug


METRICS = [
    # column, section of results.json, key, format
    ("AP (pos)", "bbox_positives", "AP", "{:.1f}"),
    ("AP50 (pos)", "bbox_positives", "AP50", "{:.1f}"),
    ("AP (all test)", "bbox", "AP", "{:.1f}"),
    ("FA/neg img @R0.8", "negatives", "fa_per_image@recall0.8", "{:.3f}"),
    ("FA/neg img @R0.9", "negatives", "fa_per_image@recall0.9", "{:.3f}"),
    ("FA/neg img @0.5", "negatives", "fa_per_image@0.5", "{:.3f}"),
    ("MR^-2", "negatives", "log_avg_miss_rate", "{:.3f}"),
    ("neg imgs with FA @0.5", "negatives", "images_with_fa@0.5", "{:.2f}"),
]
# With --verdicts: the alarms at recall 0.9 less those a person judged unannotated objects.
AUDITED = ("FA/neg img @R0.9 audited", "audit", "fa_per_image@recall0.9", "{:.3f}")
# Where each setting's recall-0.9 threshold falls, and what a fixed score of 0.5 finds and
# fires: a mechanism that lowers every score, the objects' too, lowers that threshold and can
# fire more at recall 0.9 while firing less at 0.5.
OPERATING_POINT = [
    ("score @R0.9", "negatives", "score@recall0.9", "{:.3f}"),
    ("recall @0.5", "operating_point", "recall@0.5", "{:.3f}"),
    ("FA/neg img @0.5", "negatives", "fa_per_image@0.5", "{:.3f}"),
    ("FA/neg img @R0.9", "negatives", "fa_per_image@recall0.9", "{:.3f}"),
]


# ------------------------------------------------------------------------------- commands


def data_output_dir(args):
    """The folder of the data's runs, lists and tables, e.g. output/bench_bccd/txl_pbc_val."""
    return REPO / args.output / presets.data_label(args)


def data_flags(args):
    """Registration flags of the benchmark's training and test sets (and the training set's
    positive and negative subsets, for mining)."""
    output_dir = data_output_dir(args)
    flags = presets.registration_flags(args, TRAIN, TEST, output_dir)
    flags += ["--register-subset", f"{TRAIN}_positives", TRAIN, "positives"]
    flags += ["--register-subset", f"{TRAIN}_negatives", TRAIN, "negatives"]
    return flags


def schedule_opts(iters, seed, output_dir, eval_period=0):
    """The same budget and learning-rate schedule shape for every setting."""
    steps = f"({int(iters * 0.75)}, {int(iters * 0.92)})"
    return [
        "SEED", str(seed), "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", steps,
        "SOLVER.CHECKPOINT_PERIOD", str(iters), "OUTPUT_DIR", str(output_dir),
        "DATASETS.TEST", f'("{TEST}",)', "TEST.EVAL_PERIOD", str(eval_period),
    ]  # fmt: skip


def training_negatives(args):
    """How many negative images the benchmark's training set holds (the mining pool): its
    datasets registered in this process, as the runs register them."""
    parser = add_registration_arguments(argparse.ArgumentParser())
    register_from_args(parser.parse_args(data_flags(args)))
    return len(DatasetCatalog.get(f"{TRAIN}_negatives"))


def share_count(share, pool_size):
    """N, the negatives a "share" setting adds: the share of the pool, rounded half up, >= 1."""
    return max(1, math.floor(share * pool_size + 0.5))


def table_rows(args):
    """The rows of ``args.settings``: one per setting, a "share" setting one per share."""
    shares = [s for s in args.settings if SETTINGS[s].mining == "share"]
    pool_size = training_negatives(args) if shares else 0
    if shares and pool_size == 0:
        raise SystemExit(f"{', '.join(shares)}: the training set has no negative image to add")
    rows = []
    for setting in args.settings:
        if SETTINGS[setting].mining != "share":
            rows.append(Row(setting, setting))
            continue
        for share in args.negatives_share:
            count = share_count(share, pool_size)
            label = f"{setting}, {share:.0%} of the pool (N = {count} of {pool_size})"
            rows.append(Row(label, setting, share, count))
    return rows


def command_for(row, seed, output_dir, args, eval_period=0):
    config, opts, mining, selection, reviewed = SETTINGS[row.setting]
    common = ["--config-file", config, *data_flags(args)]
    schedule = schedule_opts(args.iters, seed, output_dir, eval_period) + EVAL_OPTS
    if not mining:
        return [
            sys.executable,
            "train_net.py",
            *common,
            *schedule,
            "DATASETS.TRAIN",
            f'("{TRAIN}",)',
            *opts,
        ]
    # The recipe: start from the positive images, mine the training set's negatives; the
    # rounds share the budget, online mining spends it on one schedule. A "share" setting is
    # one round that adds its N at once, chosen by mining or at random.
    rounds, per_round, selection_flags = args.mining_rounds, args.mining_per_round, []
    if mining == "share":
        rounds, per_round, selection_flags = 1, row.count, ["--selection", selection]
    if reviewed:
        selection_flags += ["--verdicts", str(mined_verdicts_file(args, row, seed))]
    if mining == "online":
        schedule_flags = ["--online"]
    else:
        schedule_flags = ["--iters-per-round", str(args.iters // (rounds + 1))]
    return [
        sys.executable, "-m", "hnm_d2.mine", *common,
        "--negative-pool", f"{TRAIN}_negatives", "--rounds", str(rounds),
        "--per-round", str(per_round), *selection_flags, *schedule_flags,
        *schedule, "DATASETS.TRAIN", f'("{TRAIN}_positives",)', *opts,
    ]  # fmt: skip


def run_one(command, log_path, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {log_path}")
    return time.perf_counter() - start


def run_dir(args, row, seed, suffix=""):
    folder = f"{row.folder}{suffix}_seed{seed}"
    return (data_output_dir(args) / folder).resolve()


# -------------------------------------------------------------------------- reviewed runs


def mined_verdicts_file(args, row, seed):
    """The verdicts a reviewed row's run obeys: ``--mined-verdicts`` for its seed and share."""
    return REPO / args.mined_verdicts.format(seed=seed, share=f"{row.share:g}")


def start_reviewed_run(args, row, seed, output_dir):
    """Start a reviewed run where its mined twin (same seed and share) chose the images that
    the verdicts judge: its round 1 selection, and its round 0 where the weights are kept (a
    twin restored from a record has none: round 0 trains again, the same training)."""
    verdicts = mined_verdicts_file(args, row, seed)
    twin = run_dir(args, row._replace(setting=MINED), seed)
    source, target = twin / "mining", output_dir / "mining"
    if not verdicts.exists():
        raise SystemExit(
            f"{row.label}, seed {seed}: no verdicts file {verdicts} (--mined-verdicts). Judge the "
            f"images on {source / 'review.html'}, export the verdicts and save them there."
        )
    if (target / "round_1_selection.json").exists():  # started in an earlier sitting
        return
    if not (source / "round_1_selection.json").exists():
        raise SystemExit(
            f"{row.label}, seed {seed}: {source / 'round_1_selection.json'} is missing, the "
            f'images the verdicts judge. Run "{MINED}" with the same seed and share first.'
        )
    target.mkdir(parents=True, exist_ok=True)
    files = ["settings.json", "round_1_selection.json"]
    if (source / "round_0" / "model_final.pth").exists():
        shutil.copytree(source / "round_0", target / "round_0", dirs_exist_ok=True)
        files.insert(0, "round_0.json")
    for name in files:  # the selection last: it marks the start as done
        # The twin's summaries name its own folder (weights, outputs): now this run's.
        text = (source / name).read_text().replace(str(twin), str(output_dir))
        (target / name).write_text(text)


# --------------------------------------------------------------------------------- tables


def mean_and_spread(values):
    """(mean, sample sd, seeds with a value) over the seeds where the metric was computed."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return math.nan, math.nan, 0
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return statistics.mean(present), spread, len(present)


def format_cell(values, fmt):
    mean, spread, count = mean_and_spread(values)
    if count == 0:
        return "n/a"
    cell = f"{fmt.format(mean)} ± {fmt.format(spread)}"
    return cell if count == len(values) else f"{cell} ({count}/{len(values)} seeds)"


def format_row(setting, runs, metrics):
    cells = [setting]
    for _, section, key, fmt in metrics:
        cells.append(format_cell([r["results"].get(section, {}).get(key) for r in runs], fmt))
    cells.append(format_cell([r["seconds"] for r in runs], "{:.0f}"))
    return "| " + " | ".join(cells) + " |"


def markdown_table(all_runs, metrics):
    header = ["setting"] + [m[0] for m in metrics] + ["time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [format_row(setting, runs, metrics) for setting, runs in all_runs.items() if runs]
    return "\n".join(lines)


def audited_results(output_dir, verdicts, verdicts_file, test_json):
    """The "audit" section of a run's results: false alarms per negative image at recall 0.9
    without those on candidates judged "object" (benchmarks/negative_audit.py). An alarm no one
    has judged still counts, and is reported."""
    split = recount(Run.from_run_dir(output_dir, test_json), 0.9, verdicts)
    if split is None:
        return {}
    if split.get("no candidate"):
        sys.stderr.write(
            f"{output_dir}: {split['no candidate']:.3f} alarms per negative image at recall 0.9 "
            f"have no verdict in {verdicts_file} and count as false; give them one with "
            "benchmarks/negative_audit.py candidates ... --verdicts " + verdicts_file + "\n"
        )
    return {"fa_per_image@recall0.9": sum(split.values()) - split.get("object", 0.0)}


def alarms_per_source(output_dir, test_json, recall=0.9):
    """False alarms per negative test image at ``recall`` in each TXL-PBC source (the threshold
    is the whole test set's), with the source's count of negative images."""
    run = Run.from_run_dir(output_dir, test_json)
    threshold = run.score_at_recall(recall)
    negatives = Counter(presets.source_of_size(*run.sizes[i]) for i in run.negative_ids)
    if threshold is None:
        return {f"{source} ({count})": None for source, count in negatives.items()}
    alarms = Counter(
        presets.source_of_size(*run.sizes[d["image_id"]])
        for d in run.negative_detections(threshold)
    )
    return {f"{source} ({count})": alarms[source] / count for source, count in negatives.items()}


def recall_at_score(froc_file, score):
    """The share of the test objects found by the detections scored >= ``score``."""
    curve = load_curve(str(froc_file))
    kept = curve.thresholds >= score  # thresholds run from the highest down
    return float(curve.recall[kept][-1]) if kept.any() else 0.0


def per_source_metrics(all_runs):
    """Columns of the per-source table: one per source in the runs' results."""
    sources = sorted(
        {s for runs in all_runs.values() for r in runs for s in r["results"]["per_source"]}
    )
    return [(f"FA/neg img @R0.9, {s}", "per_source", s, "{:.3f}") for s in sources]


# ---------------------------------------------------------------------------------- plots


def recall_at(curve, grid):
    """A seed's recall at each false-alarm rate of ``grid``: at the lowest threshold whose
    false alarms per negative image do not exceed it (0 where none does)."""
    index = np.searchsorted(curve.fa_per_negative_image, grid, side="right")
    return np.concatenate([[0.0], curve.recall])[index]


def plot_settings_froc(froc_files, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    grid = np.logspace(-3, 1, 200)
    for setting, files in froc_files.items():
        if files:
            curves = [load_curve(str(f)) for f in files]
            recall = np.mean([recall_at(curve, grid) for curve in curves], axis=0)
            axes.plot(grid, recall, label=f"{setting} ({len(files)} seeds)")
    for recall in (0.8, 0.9):
        axes.axhline(recall, linestyle=":", linewidth=0.8, color="grey")
    axes.set_xscale("log")
    axes.set(
        xlabel="false alarms per negative test image", ylabel="recall (IoU 0.5), mean of seeds"
    )
    axes.set_title("FROC per setting: higher and further left is better")
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def ap50_by_iteration(output_dir):
    """[(iteration, AP50 on the positive images)] from a run's periodic evaluations."""
    points = []
    for line in (output_dir / "metrics.json").read_text().splitlines():
        record = json.loads(line)
        if "bbox_positives/AP50" in record:
            points.append((record["iteration"] + 1, record["bbox_positives/AP50"]))
    return points


def plot_plateau(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, points in curves.items():
        axes.plot(*zip(*points), "o-", label=label)
    axes.set(xlabel="iteration", ylabel="AP50 on positive test images", title="Training budget")
    axes.grid(True, linewidth=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ----------------------------------------------------------------------------------- main


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["bccd", "txl_pbc", "custom"], default="bccd")
    parser.add_argument("--root", help="the preset's dataset folder (default: ../shared/data/)")
    parser.add_argument("--bccd-root", dest="root", help=argparse.SUPPRESS)  # earlier commands
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument(
        "--train-split",
        help="BCCD training split: a name in ImageSets/Main or a .txt file of file ids "
        "(default: trainval with --split test, else train)",
    )
    for role in ("train", "test"):
        parser.add_argument(
            f"--{role}",
            nargs="+",
            metavar="ARG",
            help=f"with --dataset custom, the {role} set: coco JSON IMAGES, "
            "voc ROOT SPLIT CLASSES or yolo ROOT SPLIT CLASSES",
        )
    parser.add_argument("--iters", type=int, default=1500, help="training iterations per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    # By default every setting that needs no person: a reviewed one waits for their verdicts.
    unattended = [name for name, setting in SETTINGS.items() if not setting.reviewed]
    parser.add_argument("--settings", nargs="+", default=unattended, choices=list(SETTINGS))
    parser.add_argument("--mining-rounds", type=int, default=2)
    parser.add_argument("--mining-per-round", type=float, default=0.2)
    parser.add_argument(
        "--negatives-share",
        type=float,
        nargs="+",
        default=[0.25],
        help='with "+ N negatives mined/random": N as shares in (0, 1] of the training '
        "negatives (the pool); a row per share",
    )
    parser.add_argument(
        "--mined-verdicts",
        metavar="FILE",
        help='with "+ N negatives mined, reviewed": the verdicts on the images the mined run '
        "chose, {seed} and {share} filled in, e.g. "
        "benchmarks/audits/txl_pbc_test_mined_seed{seed}_verdicts.json",
    )
    parser.add_argument("--output", default="output/bench_bccd")
    parser.add_argument(
        "--records",
        help="a folder of run records (benchmarks/run_records.py): runs recorded there and not "
        "finished in --output are restored and reused, and every finished run is recorded",
    )
    parser.add_argument("--curve", action="store_true", help="AP50 against the iteration")
    parser.add_argument("--eval-period", type=int, default=250, help="with --curve")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each with --threads threads"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="threads per run (0 = cores // jobs)"
    )
    parser.add_argument(
        "--verdicts",
        help="a verdicts file of benchmarks/negative_audit.py: adds the alarms at recall 0.9 "
        "without those judged unannotated objects",
    )
    args = parser.parse_args()
    if (args.dataset == "custom") != bool(args.train and args.test):
        parser.error("--train and --test go together, with --dataset custom")
    reviewed = [s for s in args.settings if SETTINGS[s].reviewed]
    if reviewed and not args.mined_verdicts:
        parser.error(f"{', '.join(reviewed)} needs --mined-verdicts")
    if not all(0 < share <= 1 for share in args.negatives_share):
        parser.error(f"--negatives-share {args.negatives_share}: give shares in (0, 1]")
    for spec in (args.train or []), (args.test or []):
        if spec and spec[0] not in presets.REGISTER_FLAG:
            parser.error(
                f"--train/--test start with a format, one of {list(presets.REGISTER_FLAG)}"
            )
    return args


def run_all(args, threads, rows):
    """Run (or reuse) every row and seed; returns label -> runs, label -> froc files."""
    suffix = "_curve" if args.curve else ""
    eval_period = args.eval_period if args.curve else 0
    records = REPO / args.records if args.records else None
    if records:
        for restored in run_records.restore_records(records, data_output_dir(args)):
            sys.stderr.write(f"restored from {records}: {restored.name}\n")

    def run(row, seed):
        output_dir = run_dir(args, row, seed, suffix)
        output_dir.mkdir(parents=True, exist_ok=True)
        timing = output_dir / "seconds.txt"
        if timing.exists():  # finished in an earlier sitting: reuse, do not retrain
            seconds = float(timing.read_text())
        else:
            if SETTINGS[row.setting].reviewed:
                start_reviewed_run(args, row, seed, output_dir)
            command = command_for(row, seed, output_dir, args, eval_period)
            (output_dir / "command.txt").write_text(" ".join(command) + "\n")
            seconds = run_one(command, output_dir / "benchmark.log", threads)
            timing.write_text(f"{seconds:.1f}")
        if records and not run_records.record_path(records, output_dir).exists():
            run_records.save_record(output_dir, records)
        sys.stderr.write(f"done: {row.label}, seed {seed}, {seconds:.0f} s\n")
        return row, seed, output_dir, seconds

    verdicts = load_verdicts(args.verdicts) if args.verdicts else None
    all_runs = {row.label: [] for row in rows}
    froc_files = {row.label: [] for row in rows}
    jobs = [(row, seed) for seed in args.seeds for row in rows]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for row, seed, output_dir, seconds in pool.map(lambda job: run(*job), jobs):
            training_dir, results = final_training(output_dir)
            test_json = Path(args.test[1]) if args.test and args.test[0] == "coco" else None
            if args.dataset == "txl_pbc":
                results = {**results, "per_source": alarms_per_source(output_dir, test_json)}
            if verdicts is not None:
                audit = audited_results(output_dir, verdicts, args.verdicts, test_json)
                results = {**results, "audit": audit}
            froc = training_dir / "inference" / TEST / "froc.json"
            if froc.exists():
                froc_files[row.label].append(froc)
                operating_point = {"recall@0.5": recall_at_score(froc, 0.5)}
                results = {**results, "operating_point": operating_point}
            all_runs[row.label].append({"seed": seed, "seconds": seconds, "results": results})
    return all_runs, froc_files


def main():
    args = parse_args()
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    rows = table_rows(args)
    all_runs, froc_files = run_all(args, threads, rows)
    out = data_output_dir(args)
    data = (
        "custom data"
        if args.dataset == "custom"
        else f"{args.dataset} Platelets, evaluated on {args.split}"
    )
    print(
        f"{data}, {args.iters} iterations, seeds {args.seeds}, "
        f"{args.jobs} run(s) at a time with {threads} thread(s) each:\n"
    )
    if args.curve:
        curves = {
            f"{row.label}, seed {seed}": ap50_by_iteration(run_dir(args, row, seed, "_curve"))
            for row in rows
            for seed in args.seeds
        }
        plot_plateau(curves, out / "plateau.png")
        for label, points in curves.items():
            print(f"{label}: " + ", ".join(f"{it}: {ap:.1f}" for it, ap in points))
        print(f"\nPlot: {out / 'plateau.png'}")
        return
    (out / "runs.json").write_text(json.dumps(all_runs, indent=2))
    table = markdown_table(all_runs, METRICS + [AUDITED] if args.verdicts else METRICS)
    (out / "table.md").write_text(table + "\n")
    plot_settings_froc(froc_files, out / "froc.png")
    print(table)
    operating_point = markdown_table(all_runs, OPERATING_POINT)
    (out / "table_operating_point.md").write_text(operating_point + "\n")
    print("\nOperating points:\n" + operating_point)
    if args.dataset == "txl_pbc":
        sources = markdown_table(all_runs, per_source_metrics(all_runs))
        (out / "table_per_source.md").write_text(sources + "\n")
        print("\nPer source (negative test images in brackets):\n" + sources)
    print(f"\nFROC: {out / 'froc.png'}")


if __name__ == "__main__":
    main()
