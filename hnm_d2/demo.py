"""``python -m hnm_d2.demo`` (``make demo``): stock detectron2 and hnm_d2 side by side.

Generates the embedded synthetic dataset (targets among look-alike distractors; negative images
hold distractors only; :data:`hnm_d2.data.DEMO_SPLIT_SIZES`), trains the small CPU model twice
on it from the same seed, and reports both in one table, at the same operating point: AP50 on
the positive test images, false alarms per negative test image at recall 0.9 and at score 0.5,
and the log-average miss rate; how sure the difference in false alarms at recall 0.9 is (a
paired bootstrap over the test images); both FROC curves in one PNG and a line reading them.
Last, a short mining run with the hnm_d2 model picks the pool images it fires on most, for a
person to review.

* **stock detectron2**: GeneralizedRCNN, RPN and StandardROIHeads, with detectron2's default of
  dropping the images without annotations from training (the negative images);
* **hnm_d2**: the same model and budget, trained on the negative images too (hnm_d2's mapper),
  with the mechanisms that configs/demo_synthetic_R18_FPN_cpu.yaml switches on: chosen on the
  synthetic val split by benchmarks/synthetic_val_sweep.sh, never on the test split shown.

The terminal gets a progress bar per model and the results; everything the libraries log or
print goes to OUTPUT/log.txt (``--verbose``: to the terminal as well). The figures are the same
on every run of the same stack on the same kind of CPU: the seed, the data, the number of
threads and of data-loading workers are fixed (README, "The two commands").

Each run resumes from its folder, so a second ``make demo`` trains nothing again: it evaluates
the two trained models and prints the table.
"""

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

import torch
from detectron2.utils.collect_env import collect_env_info
from detectron2.utils.env import seed_all_rng
from tabulate import tabulate

from .compat import setup_logger_to_file
from .data import DEMO_SPLIT_SIZES, register_synthetic_splits
from .engine.launcher import format_figure, load_config, save_results
from .engine.mining_state import MiningLayout
from .engine.online_mining import run_online_mining
from .engine.progress import ProgressBar
from .engine.trainer import HNMTrainer
from .evaluation.bootstrap import compare, load_run_images
from .evaluation.froc import load_curve, plot_froc
from .evaluation.operating_point import false_alarms_at_recall

__all__ = ["main", "route_library_logs", "prepare_run"]

# The runs' details go to the log file (through the hnm_d2 logger); the report goes to the
# terminal as well. Named, not __name__: run as __main__, a logger would reach no handler.
logger = logging.getLogger("hnm_d2.demo")
report = logging.getLogger("hnm_d2.demo.report")

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo_synthetic_R18_FPN_cpu.yaml")
# Intra-op threads: float sums are ordered by thread, so the figures depend on their number.
# Pinned (not "every core") so that a machine with more cores prints the same table.
THREADS = 2
STOCK = [
    "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
    "MODEL.PROPOSAL_GENERATOR.NAME", "RPN",
    "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
    "MODEL.HNM.BUFFER.ENABLED", "False",
    "MODEL.HNM.ROI_OHEM.ENABLED", "False",
    "MODEL.HNM.RPN_OHEM.ENABLED", "False",
    "MODEL.HNM.ROI_BG_WEIGHT", "1.0",
    "MODEL.HNM.RPN_BG_WEIGHT", "1.0",
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS", "True",
]  # fmt: skip
BASELINE, CANDIDATE = "stock detectron2", "hnm_d2"
MODELS = {BASELINE: ("stock", STOCK), CANDIDATE: ("hnm_d2", [])}
TEST_SET = "synthetic_test"
COLUMNS = [
    # header, section, key, format
    ("AP50 (positives)", "bbox_positives", "AP50", ".1f"),
    ("FA/neg @ recall 0.9", "negatives", "fa_per_image@recall0.9", ".3f"),
    ("FA/neg @ score 0.5", "negatives", "fa_per_image@0.5", ".3f"),
    ("MR^-2", "negatives", "log_avg_miss_rate", ".3f"),
]
RECALL = 0.9  # the matched recall of the bootstrap
RESAMPLES = 2000
FROC_RECALLS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # where the line under the table reads the curves
# The short mining run: the hnm_d2 model trains on at its last learning rate and, half-way,
# moves the pool images it fires on most into its training stream; those are what a person
# reviews. Iterations and images are few: the run shows the workflow, the table the result.
MINING = [
    "HNM.MINING.ONLINE", "True",
    "HNM.MINING.POOL", ("synthetic_pool",),
    "HNM.MINING.ROUNDS", "1",
    "HNM.MINING.PER_ROUND", "8.0",  # a count (>= 1), as a float: the key also takes shares
    "HNM.MINING.MINE_EVERY", "10",
    "SOLVER.MAX_ITER", "20",
    "SOLVER.BASE_LR", "0.0001",
    "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "0",
    "DATASETS.TEST", "()",
]  # fmt: skip
LIBRARY_LOGGERS = ("detectron2", "fvcore", "hnm_d2")


def route_library_logs(log_file, verbose):
    """detectron2's, fvcore's and hnm_d2's loggers write to ``log_file``, and to the terminal
    only when ``verbose``; calling it again (any number of times) adds nothing.

    detectron2's ``default_setup`` is not used: it adds a terminal and a file handler for the
    OUTPUT_DIR it is given (``setup_logger`` is cached on its arguments), so the second model of
    one process printed every line twice and wrote it into the first model's log too.
    """
    for name in LIBRARY_LOGGERS:
        setup_logger_to_file(log_file, name, to_terminal=verbose)


def _report_to(terminal, verbose):
    """The report goes to the terminal as it is, and to the log file through the hnm_d2
    logger; with ``verbose`` that logger prints it already. Replaces, never adds, handlers."""
    handlers = [] if verbose else [logging.StreamHandler(terminal)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
    report.handlers = handlers
    report.setLevel(logging.INFO)


def prepare_run(opts, output_dir):
    """One run's config (the demo config, ``opts``, OUTPUT_DIR ``output_dir``), saved to its
    folder and logged, and the seed set: what ``default_setup`` does, without its loggers."""
    cfg = load_config(
        argparse.Namespace(config_file=CONFIG, opts=[*opts, "OUTPUT_DIR", output_dir])
    )
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    logger.info("Config of %s:\n%s", output_dir, cfg.dump())
    seed_all_rng(cfg.SEED)
    return cfg


def train_and_evaluate(label, output_dir, opts, bars):
    """Train (or resume) one model on the synthetic data and evaluate it on the test split,
    with a progress bar drawn on ``bars``; returns its results."""
    cfg = prepare_run(opts, output_dir)
    trainer = HNMTrainer(cfg)
    trainer.register_hooks([ProgressBar(label, file=bars, after_last="evaluating")])
    trainer.resume_or_load(resume=True)
    results = trainer.train()
    save_results(results, output_dir)
    return results


def _cell(results, section, key, spec):
    return format_figure(results.get(section, {}).get(key), spec)


def results_table(results):
    rows = [[label] + [_cell(results[label], *c[1:]) for c in COLUMNS] for label in MODELS]
    return tabulate(rows, headers=["model"] + [c[0] for c in COLUMNS], tablefmt="pipe")


def inference_file(output, label, name):
    """A file the evaluation of model ``label`` wrote for the test set."""
    return os.path.join(output, MODELS[label][0], "inference", TEST_SET, name)


def bootstrap_line(output, data_dir):
    """How sure the difference in false alarms at RECALL is: the paired bootstrap of
    :mod:`hnm_d2.evaluation.bootstrap` over the test images, in one sentence."""
    test_json = os.path.join(data_dir, "test.json")
    baseline, candidate = (
        [load_run_images(test_json, inference_file(output, label, "coco_instances_results.json"))]
        for label in (BASELINE, CANDIDATE)
    )
    c = compare(baseline, candidate, RECALL, RESAMPLES, seed=0)
    return (
        f"{CANDIDATE}'s false alarms per negative image at recall {RECALL:g} are {c.ratio:.2f} "
        f"times {BASELINE}'s ({c.candidate_rate:.3f} vs {c.baseline_rate:.3f}); over {c.draws} "
        f"paired draws of the test images, 95% of the ratios lie between {c.low:.2f} and "
        f"{c.high:.2f}, and {CANDIDATE} has fewer in {round(c.fewer * c.draws)} of the draws."
    )


def _recall_list(recalls):
    words = [f"{r:g}" for r in recalls]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _verdict(baseline_rate, candidate_rate):
    if candidate_rate < baseline_rate:
        return "fewer"
    if candidate_rate > baseline_rate:
        return "more"
    # NaN: one of the two never reaches the recall.
    return "as many" if candidate_rate == baseline_rate else "not reached by both"


def froc_reading(curves):
    """The FROC plot in one line: at which of FROC_RECALLS the candidate makes fewer false
    alarms per negative image than the baseline, and at which more."""
    recalls_by_verdict = {}
    for recall in FROC_RECALLS:
        rates = [false_alarms_at_recall(curves[label], recall)[0] for label in MODELS]
        recalls_by_verdict.setdefault(_verdict(*rates), []).append(recall)
    verdicts = "; ".join(
        f"{verdict} at recall {_recall_list(recalls)}"
        for verdict, recalls in recalls_by_verdict.items()
    )
    return f"{CANDIDATE}'s false alarms per negative image against {BASELINE}'s: {verdicts}."


def mine_the_pool(output, label, opts):
    """The short mining run (MINING) from model ``label``'s weights and config (with ``opts``);
    returns its OUTPUT_DIR."""
    mining_dir = os.path.join(output, "mining")
    folder, model_opts = MODELS[label]
    weights = os.path.join(output, folder, "model_final.pth")
    cfg = prepare_run([*model_opts, *opts, "MODEL.WEIGHTS", weights, *MINING], mining_dir)
    run_online_mining(cfg)
    return mining_dir


def review_page(mining_dir):
    """The page on which a person judges what the mining run picked: online mining writes it
    after each step (see :mod:`hnm_d2.review`)."""
    return MiningLayout(mining_dir).review_page


@contextlib.contextmanager
def _libraries_to_log(log_file, verbose):
    """What the libraries print rather than log (pycocotools' summaries, warnings, their own
    tqdm bars) goes to the log file too, unless ``verbose``."""
    if verbose:
        yield
        return
    with open(log_file, "a", buffering=1) as stream:  # line-buffered, between log records
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="output/demo", help="folder of the data and runs")
    parser.add_argument(
        "--verbose", action="store_true", help="print the libraries' log too, not only to log.txt"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs, for both models"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    os.makedirs(args.output, exist_ok=True)
    log_file = os.path.join(args.output, "log.txt")
    bars = sys.stderr  # the terminal's, taken before the libraries' output goes to the log
    route_library_logs(log_file, args.verbose)
    _report_to(sys.stdout, args.verbose)
    data_dir = os.path.join(args.output, "data")
    report.info(
        "Training %s and %s on the synthetic data in %s (%d threads); log: %s",
        BASELINE,
        CANDIDATE,
        data_dir,
        THREADS,
        log_file,
    )
    results = {}
    with _libraries_to_log(log_file, args.verbose):
        logger.info("Environment:\n%s", collect_env_info())
        register_synthetic_splits(data_dir, sizes=DEMO_SPLIT_SIZES)
        for label, (folder, opts) in MODELS.items():
            results[label] = train_and_evaluate(
                label, os.path.join(args.output, folder), [*opts, *args.opts], bars
            )
        curves = {
            label: load_curve(inference_file(args.output, label, "froc.json")) for label in MODELS
        }
        froc = os.path.join(args.output, "froc.png")
        plot_froc(curves, froc)
        sureness = bootstrap_line(args.output, data_dir)
        report.info("Mining the pool with the %s model (a short run) ...", CANDIDATE)
        page = review_page(mine_the_pool(args.output, CANDIDATE, args.opts))
    positives, negatives = DEMO_SPLIT_SIZES["test"]
    report.info(
        "\nOn the synthetic test split (%d positive, %d negative images; FA/neg: false alarms "
        "per negative image):\n%s\n%s\nFROC: %s: %s\n"
        "Mined images to review (open in a browser): %s",
        positives,
        negatives,
        results_table(results),
        sureness,
        froc,
        froc_reading(curves),
        page,
    )


if __name__ == "__main__":
    main()
