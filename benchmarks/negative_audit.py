#!/usr/bin/env python
"""Are the false alarms on negative test images false? An audit by eye, then a recount.

A "negative" image is one whose annotation file lists no object of the class; if the annotators
missed objects there, a detector that finds them is counted as firing on nothing. This script
shows every such alarm to a person and recounts with their verdicts.

Step 1, candidates: every detection on a negative image scored at or above the threshold that
the least confident run needs to reach the recall, merged across the runs (IoU 0.5), is cut out
with its surroundings onto numbered contact sheets; one more sheet shows annotated objects for
reference. The candidates are written to candidates.json.

    .venv/bin/python benchmarks/negative_audit.py candidates RUN_DIR... --output output/audit

A person then copies candidates.json and sets each candidate's "verdict" to "object" (an
unannotated object), "background" or "unsure". Verdicts already given to the same box in an
earlier verdicts file (--verdicts) are carried over, so new runs only add new candidates.

Step 2, recount: per run, the false alarms per negative image at the recall, split by verdict.
A detection on a candidate marked "object" is then no false alarm (ignored, as COCO ignores
crowd regions); the score threshold, set by the annotated positive images, does not change.

    .venv/bin/python benchmarks/negative_audit.py recount RUN_DIR... --verdicts FILE

RUN_DIR is a run directory of benchmarks/bccd_accuracy.py (for image-level mining, its final
training is used).
"""

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import torch
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from PIL import Image, ImageDraw

MERGE_IOU = 0.5
CROP_PIXELS = 128
CONTEXT = 2.5  # a crop spans this many times the box's longer side
COLUMNS = 8
PER_SHEET = 32
VERDICTS = ("object", "background", "unsure")


class Run:
    """One run's detections, ground truth and operating points on the test split."""

    def __init__(self, run_dir: Path):
        training_dir, self.results = _final_training(run_dir)
        self.name = str(run_dir)
        (inference,) = [p for p in (training_dir / "inference").iterdir() if p.is_dir()]
        coco = json.loads(_coco_ground_truth(run_dir, inference).read_text())
        self.files = {image["id"]: image["file_name"] for image in coco["images"]}
        self.objects = coco.get("annotations", [])  # absent when no image has one
        positive_ids = {annotation["image_id"] for annotation in self.objects}
        self.negative_ids = set(self.files) - positive_ids
        self.detections = json.loads((inference / "coco_instances_results.json").read_text())

    def score_at_recall(self, recall: float):
        """The score threshold at which the run reaches ``recall``; None where it never does."""
        threshold = self.results["negatives"].get(f"score@recall{recall:g}")
        return None if threshold is None or math.isnan(threshold) else threshold

    def alarms(self, min_score: float):
        """Detections on negative images scored >= ``min_score``: (file name, XYXY box, score)."""
        return [
            (self.files[d["image_id"]], _xyxy(d["bbox"]), d["score"])
            for d in self.detections
            if d["image_id"] in self.negative_ids and d["score"] >= min_score
        ]


def _coco_ground_truth(run_dir: Path, inference: Path) -> Path:
    """The test set in COCO format, as detectron2's COCOEvaluator caches it: in the inference
    directory, or (later mining rounds, which reuse the cache) the first one in the run."""
    cached = list(inference.glob("*_coco_format.json")) or sorted(
        run_dir.rglob("*_coco_format.json")
    )
    if not cached:
        raise SystemExit(f"{run_dir}: no *_coco_format.json of the test set under it")
    return cached[0]


def _final_training(run_dir: Path):
    """(directory of the run's final training, its evaluation results)."""
    if (run_dir / "results.json").exists():
        return run_dir, json.loads((run_dir / "results.json").read_text())
    report = json.loads((run_dir / "mining" / "report.json").read_text())
    final = report["rounds"][-1] if "rounds" in report else report
    return Path(final["training_dir"]), final["results"]


def _xyxy(xywh):
    return BoxMode.convert(list(xywh), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)


def _same_box(box, others, iou=MERGE_IOU):
    """Index of the first of ``others`` (XYXY lists) overlapping ``box`` by ``iou``, or -1."""
    if not others:
        return -1
    ious = pairwise_iou(Boxes(torch.tensor([box])), Boxes(torch.tensor(others)))[0]
    hits = (ious >= iou).nonzero()
    return int(hits[0]) if len(hits) else -1


def _same_image(file_a, file_b):
    """Verdicts are matched by the image's file name alone, so that a verdicts file written on
    one machine applies to a copy of the dataset anywhere else."""
    return Path(file_a).name == Path(file_b).name


def merge_candidates(alarms):
    """Greedy merge, highest score first: an alarm overlapping a candidate of its image joins it."""
    candidates = []
    for file_name, box, score in sorted(alarms, key=lambda alarm: -alarm[2]):
        same_image = [c for c in candidates if c["file_name"] == file_name]
        match = _same_box(box, [c["box"] for c in same_image])
        if match >= 0:
            same_image[match]["detections"] += 1
        else:
            candidates.append({"file_name": file_name, "box": box, "score": score, "detections": 1})
    return candidates


def carry_verdicts(candidates, earlier):
    """Each candidate gets the verdict an earlier file gave the same box, else None."""
    for candidate in candidates:
        same_image = [c for c in earlier if _same_image(c["file_name"], candidate["file_name"])]
        match = _same_box(candidate["box"], [c["box"] for c in same_image])
        candidate["verdict"] = same_image[match]["verdict"] if match >= 0 else None
    return candidates


def _crop(file_name, box, label, colour):
    image = Image.open(file_name).convert("RGB")
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * CONTEXT
    left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    crop = image.crop((int(left), int(top), int(left + side), int(top + side)))
    crop = crop.resize((CROP_PIXELS, CROP_PIXELS))
    scale = CROP_PIXELS / side
    draw = ImageDraw.Draw(crop)
    draw.rectangle(
        [(x0 - left) * scale, (y0 - top) * scale, (x1 - left) * scale, (y1 - top) * scale],
        outline=colour,
    )
    draw.text((3, 3), label, fill="yellow")
    return crop


def _sheet(crops, path):
    rows = (len(crops) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * CROP_PIXELS, rows * CROP_PIXELS))
    for i, crop in enumerate(crops):
        sheet.paste(crop, ((i % COLUMNS) * CROP_PIXELS, (i // COLUMNS) * CROP_PIXELS))
    sheet.save(path)


def write_sheets(candidates, runs, output: Path):
    """Numbered crops of the candidates without a verdict, and a sheet of annotated objects."""
    todo = [(i, c) for i, c in enumerate(candidates) if c["verdict"] is None]
    for start in range(0, len(todo), PER_SHEET):
        crops = [
            _crop(c["file_name"], c["box"], f"#{i} {c['score']:.2f}", "lime")
            for i, c in todo[start : start + PER_SHEET]
        ]
        _sheet(crops, output / f"candidates_{start // PER_SHEET}.png")
    run = next((run for run in runs if run.objects), None)
    if run is not None:
        references = [
            _crop(run.files[o["image_id"]], _xyxy(o["bbox"]), "annotated", "red")
            for o in run.objects[:PER_SHEET]
        ]
        _sheet(references, output / "annotated_objects.png")
    return len(todo)


def recall_floor(runs, recall):
    """The lowest score threshold at which one of ``runs`` reaches ``recall``."""
    thresholds = [run.score_at_recall(recall) for run in runs]
    reached = [t for t in thresholds if t is not None]
    if not reached:
        raise SystemExit(
            f"no run reaches recall {recall:g} (a test set without positive images?); "
            "give the candidates' lowest score with --min-score"
        )
    return min(reached)


def candidates_command(args):
    runs = [Run(Path(d)) for d in args.run_dirs]
    floor = args.min_score if args.min_score is not None else recall_floor(runs, args.recall)
    alarms = [alarm for run in runs for alarm in run.alarms(floor)]
    earlier = json.loads(Path(args.verdicts).read_text()) if args.verdicts else []
    candidates = carry_verdicts(merge_candidates(alarms), earlier)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "candidates.json").write_text(json.dumps(candidates, indent=1))
    todo = write_sheets(candidates, runs, args.output)
    print(
        f"{len(alarms)} detections on negative images of {len(runs)} run(s) at score >= "
        f"{floor:.3f} -> {len(candidates)} "
        f"candidates, {todo} without a verdict; sheets and candidates.json in {args.output}"
    )


def recount(run, recall, verdicts):
    """False alarms per negative image at ``recall``, split by the verdict of their candidate."""
    threshold = run.score_at_recall(recall)
    if threshold is None:
        return None
    counts = Counter()
    for file_name, box, _ in run.alarms(threshold):
        same_image = [v for v in verdicts if _same_image(v["file_name"], file_name)]
        match = _same_box(box, [v["box"] for v in same_image])
        counts[same_image[match]["verdict"] if match >= 0 else "no candidate"] += 1
    negatives = len(run.negative_ids)
    return {verdict: count / negatives for verdict, count in counts.items()}


def recount_command(args):
    verdicts = json.loads(Path(args.verdicts).read_text())
    missing = [i for i, v in enumerate(verdicts) if v.get("verdict") not in VERDICTS]
    if missing:
        raise SystemExit(
            f"{args.verdicts}: candidates {missing} have no verdict; set each one's "
            f'"verdict" to one of {VERDICTS}'
        )
    columns = ["all", *VERDICTS, "no candidate"]
    print(f"false alarms per negative image at recall {args.recall:g}, by verdict")
    print("| run | " + " | ".join(columns) + " | without unannotated objects |")
    print("|---" * (len(columns) + 2) + "|")
    for run_dir in args.run_dirs:
        run = Run(Path(run_dir))
        split = recount(run, args.recall, verdicts)
        if split is None:
            print(f"| {run.name} | recall {args.recall:g} not reached |")
            continue
        total = sum(split.values())
        cells = [total] + [split.get(column, 0.0) for column in columns[1:]]
        cells.append(total - split.get("object", 0.0))
        print(f"| {run.name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["candidates", "recount"])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--recall", type=float, default=0.9)
    parser.add_argument(
        "--min-score",
        type=float,
        help="candidates' lowest score (default: the lowest threshold at --recall of the runs)",
    )
    parser.add_argument("--verdicts", help="a candidates.json with verdicts set")
    parser.add_argument("--output", type=Path, default=Path("output/negative_audit"))
    args = parser.parse_args()
    if args.step == "recount" and not args.verdicts:
        parser.error("recount needs --verdicts FILE (a candidates.json with verdicts set)")
    return args


def main():
    args = parse_args()
    (candidates_command if args.step == "candidates" else recount_command)(args)


if __name__ == "__main__":
    main()
