"""``python -m hnm_d2.demo`` (``make demo``): stock detectron2 and hnm_d2 side by side.

Generates the embedded synthetic dataset (targets among look-alike distractors; negative images
hold distractors only), trains the small CPU model twice on it from the same seed, and reports
both in one table, at the same operating point: AP50 on the positive test images, false alarms
per negative test image at recall 0.9 and at score 0.5, and the log-average miss rate; plus
both FROC curves in one PNG.

* **stock detectron2**: GeneralizedRCNN, RPN and StandardROIHeads, with detectron2's default of
  dropping the images without annotations from training (the negative images);
* **hnm_d2**: the same model and budget, trained on the negative images too (hnm_d2's mapper),
  with the mechanisms that configs/demo_synthetic_R18_FPN_cpu.yaml switches on: chosen on the
  synthetic val split by benchmarks/synthetic_val_sweep.sh, never on the test split shown.

Each run resumes from its folder, so a second ``make demo`` trains nothing again: it evaluates
the two trained models and prints the table.
"""

import argparse
import logging
import os
from pathlib import Path

from tabulate import tabulate

from .engine.launcher import format_figure, hnm_argument_parser, register_datasets, setup
from .engine.trainer import HNMTrainer
from .evaluation.froc import load_curve, plot_froc

__all__ = ["main"]

logger = logging.getLogger("hnm_d2.demo")

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo_synthetic_R18_FPN_cpu.yaml")
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
MODELS = {"stock detectron2": ("stock", STOCK), "hnm_d2": ("hnm_d2", [])}
COLUMNS = [
    # header, section, key, format
    ("AP50 (positive images)", "bbox_positives", "AP50", ".1f"),
    ("false alarms / negative image @ recall 0.9", "negatives", "fa_per_image@recall0.9", ".3f"),
    ("false alarms / negative image @ score 0.5", "negatives", "fa_per_image@0.5", ".3f"),
    ("MR^-2", "negatives", "log_avg_miss_rate", ".3f"),
]


def train_and_evaluate(output_dir, opts, data_dir):
    """Train (or resume) one model on the synthetic data; returns (its results, its curve)."""
    args = hnm_argument_parser().parse_args(
        ["--config-file", CONFIG, "--synthetic", data_dir, *opts, "OUTPUT_DIR", output_dir]
    )
    register_datasets(args)
    cfg = setup(args)
    trainer = HNMTrainer(cfg)
    trainer.resume_or_load(resume=True)
    results = trainer.train()
    test_set = cfg.DATASETS.TEST[0]
    curve = load_curve(os.path.join(output_dir, "inference", test_set, "froc.json"))
    return results, curve


def _cell(results, section, key, spec):
    return format_figure(results.get(section, {}).get(key), spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="output/demo", help="folder of the data and runs")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs, for both models"
    )
    args = parser.parse_args(argv)
    data_dir = os.path.join(args.output, "data")
    rows, curves = [], {}
    for label, (folder, opts) in MODELS.items():
        results, curves[label] = train_and_evaluate(
            os.path.join(args.output, folder), [*opts, *args.opts], data_dir
        )
        rows.append([label] + [_cell(results, *column[1:]) for column in COLUMNS])
    froc = os.path.join(args.output, "froc.png")
    plot_froc(curves, froc)
    table = tabulate(rows, headers=["model"] + [c[0] for c in COLUMNS], tablefmt="pipe")
    logger.info("Stock detectron2 and hnm_d2 on the synthetic test set:\n%s\nFROC: %s", table, froc)


if __name__ == "__main__":
    main()
