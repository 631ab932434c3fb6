#!/usr/bin/env python
"""Mark a first model's false alarms as negative boxes: are they gone in the next model?

What a person does with the review page's per-detection verdicts ("false alarm"), or with a
dataset's own negative-box category, measured on the synthetic data (targets among look-alike
distractors; :mod:`hnm_d2.data.synthetic`). Per seed:

1. **first model**: trained on the train split (48 positive, 24 negative images), negatives
   kept (configs/demo_synthetic_R18_FPN_cpu.yaml with the buffer off);
2. **its alarms** on a held-aside split ("held": 32 positive, 96 negative images the first
   model never saw): every detection on a negative image scored at or above the threshold at
   which the first model finds RECALL of the held split's objects, i.e. what it fires on at
   that operating point;
3. **two next models**, each the first model trained on for the same schedule again (as the
   next mining round does: from the previous round's weights), with the same seed, on train +
   held: *held images added* (the held split as it is: its negative images are negatives
   already) and *+ alarms marked* (the same, with the first model's alarms as negative boxes:
   a COCO category "false alarm", ``--negative-box-category``). Trained from scratch with that
   budget instead, they fell 24 and 31 AP50 points below the first model (seed 0): 400
   iterations are 22 passes over the 72 training images, but 8 over the 200 of train + held;
4. all three evaluated on held and on the test split (100 positive, 300 negative images), each
   at its own threshold for RECALL: false alarms per negative image, and on held how many of
   the marked alarms the model still fires on (a detection at IoU >= 0.5 with the marked box).

The first model against *+ alarms marked* says whether marking removes the alarms; *held
images added* against *+ alarms marked* says what the marks add to training on the same images.
The paired bootstrap (hnm_d2.evaluation.bootstrap, over the images, all seeds together) gives
the range of the latter ratio.

    .venv/bin/python benchmarks/marking_alarms.py --seeds 0 1 2

Runs resume from their folders (OUTPUT/seed<S>/<model>/, evaluations in <model>/eval/): a
second call trains and evaluates nothing again and prints the table.
Figures change with the thread count (--threads, default 2), the seeds and the CPU kind.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# hnm_d2 from this checkout, and accuracy.py beside this script also when it is imported
# from elsewhere (its tests).
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from accuracy import run_one  # noqa: E402
from detectron2.structures import Boxes, pairwise_iou  # noqa: E402
from tabulate import tabulate  # noqa: E402

from hnm_d2.data.synthetic import generate_synthetic_coco  # noqa: E402
from hnm_d2.evaluation.bootstrap import compare, load_run_images  # noqa: E402
from hnm_d2.evaluation.froc import load_curve  # noqa: E402
from hnm_d2.evaluation.operating_point import false_alarms_at_recall  # noqa: E402
from hnm_d2.utils.atomic import write_json_atomically  # noqa: E402

CONFIG = "configs/demo_synthetic_R18_FPN_cpu.yaml"
# The first model is "negatives kept": the buffer would already chase these alarms.
MODEL_OPTS = ["MODEL.HNM.BUFFER.ENABLED", "False"]
# split: (positive images, negative images); image side 128 px, data seed 0.
SPLITS = {"train": (48, 24), "held": (32, 96), "test": (100, 300)}
NEGATIVE_CATEGORY = {"id": 2, "name": "false alarm"}
RECALL = 0.9
MATCH_IOU = 0.5
FIRST, ADDED, MARKED = "first model", "held images added", "+ alarms marked"


# ----------------------------------------------------------------------------------- data


def generate_data(data_dir):
    """The three splits' COCO files (generated once): split -> JSON path."""
    return {
        split: generate_synthetic_coco(data_dir, positive, negative, split=split)
        for split, (positive, negative) in SPLITS.items()
    }


def _load(path):
    with open(path) as f:
        return json.load(f)


def merged_training_set(split_jsons, alarms=None):
    """Train and held in one COCO dict, file names relative to the data folder; with
    ``alarms`` (image id -> XYXY boxes) those boxes as annotations of NEGATIVE_CATEGORY."""
    images, annotations = [], []
    for split in ("train", "held"):
        content = _load(split_jsons[split])
        images += [{**im, "file_name": f"{split}/{im['file_name']}"} for im in content["images"]]
        annotations += content["annotations"]
        categories = content["categories"]
    for image_id, boxes in sorted((alarms or {}).items()):
        for x0, y0, x1, y1 in boxes:
            annotations.append(
                {
                    "image_id": image_id,
                    "category_id": NEGATIVE_CATEGORY["id"],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    if alarms is not None:
        categories = categories + [NEGATIVE_CATEGORY]
    annotations = [{**a, "id": k + 1} for k, a in enumerate(annotations)]
    return {"images": images, "annotations": annotations, "categories": categories}


# ------------------------------------------------------------------------------- alarms


def negative_image_ids(coco):
    """The ids of a COCO dict's images without annotations."""
    positives = {a["image_id"] for a in coco["annotations"]}
    return {im["id"] for im in coco["images"]} - positives


def alarms_at(detections, negative_ids, threshold):
    """Image id -> XYXY boxes of ``detections`` (COCO results) on the negative images scored
    >= ``threshold``."""
    alarms = {}
    for d in detections:
        if d["image_id"] in negative_ids and d["score"] >= threshold:
            x, y, w, h = d["bbox"]
            alarms.setdefault(d["image_id"], []).append([x, y, x + w, y + h])
    return alarms


def marks_still_fired_on(marked, fired):
    """How many ``marked`` boxes (image id -> XYXY boxes) a ``fired`` box of the same image
    overlaps at IoU >= MATCH_IOU."""
    count = 0
    for image_id, boxes in marked.items():
        others = fired.get(image_id)
        if others:
            ious = pairwise_iou(Boxes(torch.tensor(boxes)), Boxes(torch.tensor(others)))
            count += int((ious.max(dim=1).values >= MATCH_IOU).sum())
    return count


# --------------------------------------------------------------------------------- runs


def train(run_dir, training_json, image_root, seed, threads, start=None, marked=False):
    """Train one model (unless its final weights exist), from the weights ``start`` if
    given; returns its weights."""
    weights = run_dir / "model_final.pth"
    if not weights.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        negative_flags = ["--negative-box-category", NEGATIVE_CATEGORY["name"]] if marked else []
        command = [
            sys.executable, "train_net.py", "--config-file", CONFIG,
            "--register-coco", "bench_train", str(training_json), str(image_root),
            *negative_flags, *MODEL_OPTS, *(["MODEL.WEIGHTS", str(start)] if start else []),
            "SEED", str(seed), "OUTPUT_DIR", str(run_dir),
            "DATASETS.TRAIN", '("bench_train",)', "DATASETS.TEST", "()",
        ]  # fmt: skip
        run_one(command, run_dir / "train.log", threads)
    return weights


def evaluate(weights, split_jsons, data_dir, threads):
    """Evaluate ``weights`` on held and test (unless done); returns the evaluation folder."""
    eval_dir = weights.parent / "eval"
    if not (eval_dir / "results.json").exists():
        eval_dir.mkdir(parents=True, exist_ok=True)
        registrations = []
        for split in ("held", "test"):
            registrations += [
                "--register-coco", f"bench_{split}", split_jsons[split], str(data_dir / split)
            ]  # fmt: skip
        command = [
            sys.executable, "train_net.py", "--config-file", CONFIG, "--eval-only",
            *registrations, *MODEL_OPTS, "MODEL.WEIGHTS", str(weights),
            "OUTPUT_DIR", str(eval_dir), "DATASETS.TRAIN", '("bench_held",)',
            "DATASETS.TEST", '("bench_held", "bench_test")',
        ]  # fmt: skip
        run_one(command, eval_dir / "eval.log", threads)
    return eval_dir


class Evaluation:
    """One model's detections on one split, and its operating point at RECALL."""

    def __init__(self, eval_dir, split, split_json):
        inference = Path(eval_dir) / "inference" / f"bench_{split}"
        self.detections_json = str(inference / "coco_instances_results.json")
        self.detections = _load(self.detections_json)
        self.split_json = split_json
        self.negative_ids = negative_image_ids(_load(split_json))
        self.alarm_rate, self.threshold = false_alarms_at_recall(
            load_curve(str(inference / "froc.json")), RECALL
        )
        self.ap50 = _load(Path(eval_dir) / "results.json")[f"bench_{split}"]["bbox_positives"][
            "AP50"
        ]

    def alarms(self):
        return alarms_at(self.detections, self.negative_ids, self.threshold)

    def run_images(self):
        return load_run_images(self.split_json, self.detections_json)


def run_seed(seed, output, split_jsons, data_dir, threads):
    """The three models of one seed: model -> {"held": Evaluation, "test": Evaluation}, and
    the first model's marked alarms."""
    seed_dir = output / f"seed{seed}"

    def evaluations(weights):
        eval_dir = evaluate(weights, split_jsons, data_dir, threads)
        return {s: Evaluation(eval_dir, s, split_jsons[s]) for s in ("held", "test")}

    first = train(seed_dir / "first", split_jsons["train"], data_dir / "train", seed, threads)
    models = {FIRST: evaluations(first)}
    marked = models[FIRST]["held"].alarms()
    write_json_atomically(str(seed_dir / "marked_alarms.json"), marked)
    for label, alarms in ((ADDED, None), (MARKED, marked)):
        training_json = seed_dir / f"{label.strip('+ ').replace(' ', '_')}.json"
        write_json_atomically(str(training_json), merged_training_set(split_jsons, alarms))
        run_dir = seed_dir / training_json.stem
        weights = train(run_dir, training_json, data_dir, seed, threads, first, alarms is not None)
        models[label] = evaluations(weights)
    return models, marked


# ------------------------------------------------------------------------------- report


def seed_rows(seed, models, marked):
    total = sum(len(boxes) for boxes in marked.values())
    rows = []
    for label, split in models.items():
        still = marks_still_fired_on(marked, split["held"].alarms())
        rows.append(
            [
                seed,
                label,
                f"{split['held'].alarm_rate:.3f}",
                f"{still} of {total}",
                f"{split['test'].alarm_rate:.3f}",
                f"{split['test'].ap50:.1f}",
            ]
        )
    return rows


HEADERS = [
    "seed",
    "model",
    f"held: FA/neg @R{RECALL:g}",
    "held: marked alarms still fired on",
    f"test: FA/neg @R{RECALL:g}",
    "test: AP50 (pos)",
]


def bootstrap_line(all_models, baseline, candidate, split, resamples):
    runs = [
        [models[label][split].run_images() for models in all_models]
        for label in (baseline, candidate)
    ]
    c = compare(*runs, RECALL, resamples, seed=0)
    return (
        f"{split}: {candidate!r} / {baseline!r} false alarms per negative image at recall "
        f"{RECALL:g}: {c.ratio:.2f} ({c.candidate_rate:.3f} vs {c.baseline_rate:.3f}), 95% of "
        f"{c.draws} paired draws in [{c.low:.2f}, {c.high:.2f}], fewer in {c.fewer:.0%}"
    )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", default="output/bench_marking")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=2000)
    return parser.parse_args()


def main():
    args = parse_args()
    output = (REPO / args.output).resolve()
    data_dir = output / "data"
    split_jsons = generate_data(str(data_dir))
    all_models, rows = [], []
    for seed in args.seeds:
        models, marked = run_seed(seed, output, split_jsons, data_dir, args.threads)
        all_models.append(models)
        rows += seed_rows(seed, models, marked)
    print(tabulate(rows, headers=HEADERS, tablefmt="pipe"))
    print(f"\nPaired bootstrap over the images, seeds {args.seeds} together:")
    print(bootstrap_line(all_models, FIRST, MARKED, "held", args.resamples))
    for split in ("held", "test"):
        print(bootstrap_line(all_models, ADDED, MARKED, split, args.resamples))


if __name__ == "__main__":
    main()
