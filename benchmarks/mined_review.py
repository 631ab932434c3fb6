#!/usr/bin/env python
"""A person's verdicts on the images a mining run chose, judged on contact sheets.

The review page (OUTPUT_DIR/mining/review.html) is where a user judges mined images one by one.
The benchmarks judge a few hundred images of several runs, and runs of other seeds choose many
of the same images; so this script cuts each chosen image's detections scored at or above
--min-score onto numbered contact sheets, carries over the verdict an earlier verdicts file
(--prior) gave the same box of the same image (IoU >= 0.5, images named by file name), and
writes the judgments as the review page exports them, for ``hnm_d2.mine --verdicts`` and
benchmarks/accuracy.py's "+ N negatives mined, reviewed".

Step 1, sheets: judgments.json lists the round's chosen images and their boxes, numbered as on
the sheets; the boxes no earlier verdict covers have a null "verdict".

    .venv/bin/python benchmarks/mined_review.py sheets RUN_DIR --output DIR \
        --prior benchmarks/audits/txl_pbc_test_mined_seed0_verdicts.json

A person sets each null "verdict" in DIR/judgments.json to "object" (a platelet nobody
annotated), "background" or "unsure".

Step 2, verdicts: an image with a box judged "object" is judged "object", its object boxes
named (it leaves training; to_annotate.json gets it); else one with an "unsure" box is "unsure"
(left out of training); else it is a clean "negative", each box a "false_alarm" that trains as
background with its image. An image without a box at --min-score is a clean negative.

    .venv/bin/python benchmarks/mined_review.py verdicts DIR/judgments.json \
        --output benchmarks/audits/txl_pbc_test_mined_seed1_verdicts.json
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from negative_audit import VERDICTS, best_match, numbered_sheets  # noqa: E402

from hnm_d2.engine.verdicts import read_verdicts_file, verdicts_document  # noqa: E402

# A box verdict of the review page, as the audit's word for it.
PRIOR_WORDS = {"object": "object", "false_alarm": "background"}


def chosen_images(run_dir: Path, round_k: int):
    """The images round ``round_k`` of the mining run in ``run_dir`` chose, best first."""
    path = run_dir / "mining" / f"round_{round_k}_selection.json"
    if not path.exists():
        raise SystemExit(
            f"{path} is missing: RUN_DIR must be a mining run that reached round {round_k}"
        )
    return json.loads(path.read_text())["images"]


def prior_boxes(paths):
    """Every box an earlier verdicts file judged, as {"file_name", "box", "verdict"}."""
    boxes = []
    for path in paths:
        for file_name, detections in read_verdicts_file(path).detections.items():
            boxes += [
                {"file_name": file_name, "box": d["box"], "verdict": PRIOR_WORDS[d["verdict"]]}
                for d in detections
            ]
    return boxes


def judgments(images, min_score, prior):
    """The boxes to judge: each chosen image's detections scored >= ``min_score``, rounded to
    0.1 pixel as the review page names them, with the prior verdict on the same box if any."""
    boxes = []
    for image in images:
        detections = image["detections"]
        for box, score in zip(detections["boxes"], detections["scores"]):
            if score < min_score:
                continue
            box = [round(v, 1) for v in box]
            earlier = best_match(image["file_name"], box, prior)
            verdict = earlier["verdict"] if earlier else None
            boxes.append(
                {
                    "file_name": image["file_name"],
                    "box": box,
                    "score": round(score, 3),
                    "verdict": verdict,
                }
            )
    return boxes


def sheets_command(args):
    images = chosen_images(args.run_dir, args.round)
    boxes = judgments(images, args.min_score, prior_boxes(args.prior))
    args.output.mkdir(parents=True, exist_ok=True)
    document = {
        "round": args.round,
        "images": [{"file_name": i["file_name"], "score": i["score"]} for i in images],
        "boxes": boxes,
    }
    (args.output / "judgments.json").write_text(json.dumps(document, indent=1))
    todo = numbered_sheets(boxes, args.output, "mined")
    print(
        f"{len(images)} images chosen in round {args.round}, {len(boxes)} boxes scored >= "
        f"{args.min_score:g}: {len(boxes) - todo} judged before (--prior), {todo} to judge on "
        f"{args.output}/mined_*.png, numbered in {args.output / 'judgments.json'}"
    )


def image_verdict(boxes):
    """An image's verdict and its judged detections, from the verdicts on its boxes."""
    objects = [{"box": b["box"], "verdict": "object"} for b in boxes if b["verdict"] == "object"]
    if objects:
        return "object", objects
    if any(b["verdict"] == "unsure" for b in boxes):
        return "unsure", []
    return "negative", [{"box": b["box"], "verdict": "false_alarm"} for b in boxes]


def verdicts_command(args):
    document = json.loads(args.judgments.read_text())
    unjudged = [i for i, b in enumerate(document["boxes"]) if b["verdict"] not in VERDICTS]
    if unjudged:
        raise SystemExit(
            f"{args.judgments}: boxes {unjudged} have no verdict or another word; set each "
            f'one\'s "verdict" to one of {VERDICTS}'
        )
    verdicts, detections, mined = {}, {}, {}
    for image in document["images"]:
        file_name = image["file_name"]
        boxes = [b for b in document["boxes"] if b["file_name"] == file_name]
        verdicts[file_name], judged = image_verdict(boxes)
        if judged:
            detections[file_name] = judged
        mined[file_name] = (f"round {document['round']}", image["score"])
    args.output.write_text(json.dumps(verdicts_document(verdicts, mined, detections), indent=1))
    counts = {v: list(verdicts.values()).count(v) for v in ("object", "unsure", "negative")}
    print(f"{args.output}: {counts}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sheets = commands.add_parser("sheets", help="contact sheets of a round's chosen images")
    sheets.add_argument("run_dir", type=Path, help="a mining run's OUTPUT_DIR")
    sheets.add_argument("--output", type=Path, required=True)
    sheets.add_argument("--round", type=int, default=1)
    sheets.add_argument("--min-score", type=float, default=0.5)
    sheets.add_argument("--prior", nargs="*", default=[], help="earlier verdicts files")
    sheets.set_defaults(run=sheets_command)
    verdicts = commands.add_parser("verdicts", help="the verdicts file of the judgments")
    verdicts.add_argument("judgments", type=Path, help="judgments.json of the sheets step")
    verdicts.add_argument("--output", type=Path, required=True)
    verdicts.set_defaults(run=verdicts_command)
    return parser.parse_args()


def main():
    args = parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
