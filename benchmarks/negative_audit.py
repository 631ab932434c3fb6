#!/usr/bin/env python
"""Are the false alarms on negative test images false? An audit by eye, then a recount.

A "negative" image is one whose annotation file lists no object of the class; if the annotators
missed objects there, a detector that finds them is counted as firing on nothing. This script
shows every such alarm to a person and recounts with their verdicts.

Step 1, candidates: every detection on a negative image scored at or above the threshold that
the least confident run needs to reach the recall (or --min-score), merged across the runs
(IoU 0.5), that no earlier verdict covers, is cut out with its surroundings onto numbered
contact sheets; one more sheet shows annotated objects for reference. candidates.json holds the
earlier verdicts (--verdicts) followed by the new candidates, numbered as on the sheets.

    .venv/bin/python benchmarks/negative_audit.py candidates RUN_DIR... --output output/audit

A person sets each new candidate's "verdict" in candidates.json to "object" (an unannotated
object), "background" or "unsure"; the file is then the verdicts file of the next steps.

Step 2, recount: per run, the false alarms per negative image at the recall, split by verdict.
A detection on a candidate marked "object" is then no false alarm (ignored, as COCO ignores
crowd regions); the score threshold, set by the annotated positive images, does not change.

    .venv/bin/python benchmarks/negative_audit.py recount RUN_DIR... --verdicts FILE

RUN_DIR is a run directory of benchmarks/accuracy.py (for image-level mining, its final
training is used). A test set registered from a COCO file needs that file (--test-json):
detectron2 writes its own COCO copy of the test set only for datasets without one.
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
    """One run's detections, ground truth and operating points on the test split.

    Args:
        name (str): the run's name in tables.
        training_dir (Path): the directory of the training that made the detections.
        results (dict): that training's evaluation results (results.json).
        test_json (Path or None): the test set in COCO format; default: detectron2's copy.
    """

    def __init__(self, name, training_dir: Path, results: dict, test_json: Path = None):
        self.name = name
        self.results = results
        inference = _inference_dir(training_dir)
        coco = json.loads((test_json or _detectron2_coco_copy(inference)).read_text())
        self.files = {image["id"]: image["file_name"] for image in coco["images"]}
        # (width, height); a COCO file of one's own may leave them out
        self.sizes = {
            image["id"]: (image.get("width"), image.get("height")) for image in coco["images"]
        }
        self.objects = coco.get("annotations", [])  # absent when no image has one
        positive_ids = {annotation["image_id"] for annotation in self.objects}
        self.negative_ids = set(self.files) - positive_ids
        self.detections = json.loads((inference / "coco_instances_results.json").read_text())

    @classmethod
    def from_run_dir(cls, run_dir: Path, test_json: Path = None):
        return cls(str(run_dir), *final_training(run_dir), test_json)

    def score_at_recall(self, recall: float):
        """The score threshold at which the run reaches ``recall``; None where it never does."""
        threshold = self.results["negatives"].get(f"score@recall{recall:g}")
        return None if threshold is None or math.isnan(threshold) else threshold

    def negative_detections(self, min_score: float):
        """Detections (COCO result entries) on negative images scored >= ``min_score`` (the
        evaluator's rule)."""
        return [
            d
            for d in self.detections
            if d["image_id"] in self.negative_ids and d["score"] >= min_score
        ]

    def alarms(self, min_score: float):
        """Detections on negative images scored >= ``min_score``: (file name, XYXY box, score)."""
        return [
            (self.files[d["image_id"]], xyxy(d["bbox"]), d["score"])
            for d in self.negative_detections(min_score)
        ]


def final_training(run_dir: Path):
    """(directory of a benchmark run's final training, its evaluation results): the run itself,
    or for image-level mining its last round (rounds) or its one training (online)."""
    if (run_dir / "results.json").exists():
        return run_dir, json.loads((run_dir / "results.json").read_text())
    report = json.loads((run_dir / "mining" / "report.json").read_text())
    final = report["rounds"][-1] if "rounds" in report else report
    # The report holds the absolute path the run was made in; a run moved, or restored from
    # benchmarks/records/, finds that training (mining/round_K or mining/online) in its own folder.
    return run_dir / "mining" / Path(final["training_dir"]).name, final["results"]


def _inference_dir(training_dir: Path) -> Path:
    test_sets = [p for p in (training_dir / "inference").iterdir() if p.is_dir()]
    if len(test_sets) != 1:
        raise SystemExit(
            f"{training_dir / 'inference'}: expected the results of one test set, found "
            f"{[p.name for p in test_sets]}; evaluate the run on one DATASETS.TEST"
        )
    return test_sets[0]


def _detectron2_coco_copy(inference: Path) -> Path:
    """The COCO copy of the test set that detectron2's COCOEvaluator writes beside its results;
    a later mining round reuses the first round's copy, so there it is looked for in every
    round of the run."""
    name = f"{inference.name}_coco_format.json"
    copies = [inference / name]
    training_dir = inference.parents[1]
    if training_dir.parent.name == "mining":
        copies += sorted(training_dir.parent.glob(f"*/inference/{inference.name}/{name}"))
    found = [path for path in copies if path.exists()]
    if not found:
        raise SystemExit(
            f"{inference}: no {name}, detectron2's COCO copy of the test set (not written for "
            "a test set registered from a COCO file); pass that file with --test-json"
        )
    return found[0]


def xyxy(xywh):
    return BoxMode.convert(list(xywh), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)


def _same_image(file_a, file_b):
    """Verdicts are matched by the image's file name alone, so that a verdicts file written on
    one machine applies to a copy of the dataset anywhere else."""
    return Path(file_a).name == Path(file_b).name


def best_match(file_name, box, entries):
    """The entry of the same image overlapping ``box`` most, by at least MERGE_IOU, or None."""
    same_image = [e for e in entries if _same_image(e["file_name"], file_name)]
    if not same_image:
        return None
    others = Boxes(torch.tensor([e["box"] for e in same_image], dtype=torch.float32))
    ious = pairwise_iou(Boxes(torch.tensor([box], dtype=torch.float32)), others)[0]
    best = int(ious.argmax())
    return same_image[best] if ious[best] >= MERGE_IOU else None


def merge_candidates(alarms):
    """Greedy merge, highest score first: an alarm overlapping a candidate of its image joins it."""
    candidates = []
    for file_name, box, score in sorted(alarms, key=lambda alarm: -alarm[2]):
        match = best_match(file_name, box, candidates)
        if match is not None:
            match["detections"] += 1
        else:
            candidates.append({"file_name": file_name, "box": box, "score": score, "detections": 1})
    return candidates


def new_candidates(candidates, verdicts):
    """The candidates no verdict covers yet, with an empty verdict to fill in."""
    uncovered = [c for c in candidates if best_match(c["file_name"], c["box"], verdicts) is None]
    return [{**c, "verdict": None} for c in uncovered]


def load_verdicts(path):
    """A verdicts file, checked: every entry has one of VERDICTS."""
    verdicts = json.loads(Path(path).read_text())
    missing = [i for i, v in enumerate(verdicts) if v.get("verdict") not in VERDICTS]
    if missing:
        raise SystemExit(
            f"{path}: entries {missing} have no verdict or another word; set each one's "
            f'"verdict" to one of {VERDICTS}'
        )
    return verdicts


def _crop(file_name, box, label, colour):
    image = Image.open(file_name).convert("RGB")
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, 1.0) * CONTEXT
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


def numbered_sheets(entries, output: Path, prefix):
    """Crops of the entries ({"file_name", "box", "score", "verdict"}) without a verdict,
    labelled with their index and score, PER_SHEET to a sheet ``<prefix>_<n>.png``; returns how
    many. The earlier sheets of the prefix go: their numbers point into an older file."""
    for old_sheet in output.glob(f"{prefix}_*.png"):
        old_sheet.unlink()
    todo = [(i, e) for i, e in enumerate(entries) if e["verdict"] is None]
    for start in range(0, len(todo), PER_SHEET):
        crops = [
            _crop(e["file_name"], e["box"], f"#{i} {e['score']:.2f}", "lime")
            for i, e in todo[start : start + PER_SHEET]
        ]
        _sheet(crops, output / f"{prefix}_{start // PER_SHEET}.png")
    return len(todo)


def write_sheets(entries, runs, output: Path):
    """Numbered crops of the entries without a verdict, and a sheet of annotated objects."""
    todo = numbered_sheets(entries, output, "candidates")
    run = next((run for run in runs if run.objects), None)
    if run is not None:
        references = [
            _crop(run.files[o["image_id"]], xyxy(o["bbox"]), "annotated", "red")
            for o in run.objects[:PER_SHEET]
        ]
        _sheet(references, output / "annotated_objects.png")
    return todo


def recall_floor(runs, recall):
    """The lowest score threshold at which one of ``runs`` reaches ``recall``."""
    reached = [t for t in (run.score_at_recall(recall) for run in runs) if t is not None]
    if not reached:
        raise SystemExit(
            f"no run reaches recall {recall:g} (a test set without positive images?); "
            "give the candidates' lowest score with --min-score"
        )
    return min(reached)


def candidates_command(args):
    runs = [Run.from_run_dir(Path(d), args.test_json) for d in args.run_dirs]
    floor = args.min_score if args.min_score is not None else recall_floor(runs, args.recall)
    alarms = [alarm for run in runs for alarm in run.alarms(floor)]
    verdicts = load_verdicts(args.verdicts) if args.verdicts else []
    entries = verdicts + new_candidates(merge_candidates(alarms), verdicts)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "candidates.json").write_text(json.dumps(entries, indent=1))
    todo = write_sheets(entries, runs, args.output)
    print(
        f"{len(alarms)} detections on negative images of {len(runs)} run(s) at score >= "
        f"{floor:.3f}: {todo} new candidates to judge, numbered in "
        f"{args.output / 'candidates.json'} after {len(verdicts)} earlier verdicts"
    )


def recount(run, recall, verdicts):
    """False alarms per negative image at ``recall``, split by the verdict of their candidate
    ("no candidate" where none covers an alarm); None where the recall is never reached or
    there is no negative image."""
    threshold = run.score_at_recall(recall)
    if threshold is None or not run.negative_ids:
        return None
    alarms = run.alarms(threshold)
    check_against_evaluator(run, recall, len(alarms) / len(run.negative_ids))
    counts = Counter()
    for file_name, box, _ in alarms:
        match = best_match(file_name, box, verdicts)
        counts[match["verdict"] if match is not None else "no candidate"] += 1
    return {verdict: count / len(run.negative_ids) for verdict, count in counts.items()}


def check_against_evaluator(run, recall, alarms_per_image):
    """The recount starts from the evaluator's own figure, or the test set read is not the one
    the run was evaluated on."""
    evaluated = run.results["negatives"].get(f"fa_per_image@recall{recall:g}")
    if evaluated is not None and not math.isclose(alarms_per_image, evaluated, abs_tol=1e-6):
        raise SystemExit(
            f"{run.name}: {alarms_per_image:.3f} false alarms per negative image at recall "
            f"{recall:g} here, {evaluated:.3f} in its evaluation: the COCO file of the test set "
            "is not the one the run was evaluated on (see --test-json)"
        )


def recount_command(args):
    verdicts = load_verdicts(args.verdicts)
    columns = ["all", *VERDICTS, "no candidate"]
    print(f"false alarms per negative image at recall {args.recall:g}, by verdict")
    print("| run | " + " | ".join(columns) + " | without unannotated objects |")
    print("|---" * (len(columns) + 2) + "|")
    for run_dir in args.run_dirs:
        run = Run.from_run_dir(Path(run_dir), args.test_json)
        split = recount(run, args.recall, verdicts)
        if split is None:
            print(f"| {run.name} | recall {args.recall:g} not reached, or no negative image |")
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
    parser.add_argument("--verdicts", help="a verdicts file (a candidates.json, judged)")
    parser.add_argument("--test-json", type=Path, help="the test set's COCO file, if it has one")
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
