"""benchmarks/mined_review.py: a round's chosen images cut onto contact sheets with earlier
verdicts carried over, and the judgments turned into the verdicts file a mining run obeys."""

import argparse
import json
import sys

import pytest
from helpers import REPO, load_script
from PIL import Image

from hnm_d2.engine.verdicts import match_mined_detections, read_verdicts_file

sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its neighbours
mined_review = load_script("benchmarks/mined_review.py")

BOX_A, BOX_B1, BOX_B2, BOX_C = (
    [10.04, 10.0, 30.0, 30.0],
    [5.0, 5.0, 25.0, 25.0],
    [35.0, 35.0, 55.0, 55.0],
    [20.0, 20.0, 40.0, 40.0],
)


@pytest.fixture
def run_dir(tmp_path):
    """A mining run whose round 1 chose four 64x64 images: a, b (two boxes), c, and d with a
    detection below 0.5 alone."""
    selection = []
    detections = {"a": [(BOX_A, 0.9)], "b": [(BOX_B1, 0.8), (BOX_B2, 0.6)], "c": [(BOX_C, 0.7)]}
    detections["d"] = [([1.0, 1.0, 9.0, 9.0], 0.3)]
    for name, found in detections.items():
        file_name = tmp_path / "pool" / f"{name}.png"
        file_name.parent.mkdir(exist_ok=True)
        Image.new("RGB", (64, 64), "white").save(file_name)
        boxes, scores = [list(b) for b, _ in found], [s for _, s in found]
        selection.append(
            {
                "file_name": str(file_name),
                "score": scores[0],
                "detections": {"boxes": boxes, "scores": scores},
            }
        )
    mining = tmp_path / "run" / "mining"
    mining.mkdir(parents=True)
    (mining / "round_1_selection.json").write_text(json.dumps({"round": 1, "images": selection}))
    return tmp_path / "run"


def prior_file(tmp_path):
    """An earlier run's verdicts: image a's box judged a false alarm, by its file name alone."""
    path = tmp_path / "earlier_verdicts.json"
    entry = {"file_name": "/elsewhere/a.png", "verdict": "negative"}
    entry["detections"] = [{"box": [10.0, 10.5, 30.0, 30.0], "verdict": "false_alarm"}]
    path.write_text(json.dumps({"format": "hnm_d2 verdicts", "version": 2, "verdicts": [entry]}))
    return path


def sheets(run_dir, output, prior):
    args = argparse.Namespace(run_dir=run_dir, output=output, round=1, min_score=0.5, prior=prior)
    mined_review.sheets_command(args)
    return json.loads((output / "judgments.json").read_text())


def test_the_boxes_to_judge_are_those_above_the_score_no_earlier_verdict_covers(run_dir, tmp_path):
    document = sheets(run_dir, tmp_path / "review", [prior_file(tmp_path)])
    assert [i["file_name"].split("/")[-1] for i in document["images"]] == [
        "a.png", "b.png", "c.png", "d.png"
    ]  # fmt: skip
    boxes = document["boxes"]
    assert [(b["file_name"].split("/")[-1], b["verdict"]) for b in boxes] == [
        ("a.png", "background"),  # carried over from the earlier run's verdicts
        ("b.png", None),
        ("b.png", None),
        ("c.png", None),
    ]  # d's detection is below 0.5
    assert boxes[0]["box"] == [10.0, 10.0, 30.0, 30.0]  # rounded to 0.1 pixel, as the page
    sheet = Image.open(tmp_path / "review" / "mined_0.png")
    assert sheet.size == (8 * 128, 128)  # the three boxes left to judge, on one row
    assert not (tmp_path / "review" / "mined_1.png").exists()


def test_the_verdicts_file_judges_each_image_by_its_boxes_and_a_mining_run_reads_it(
    run_dir, tmp_path
):
    document = sheets(run_dir, tmp_path / "review", [prior_file(tmp_path)])
    for box, verdict in zip(document["boxes"][1:], ["object", "background", "unsure"]):
        box["verdict"] = verdict
    judgments = tmp_path / "review" / "judgments.json"
    judgments.write_text(json.dumps(document))
    output = tmp_path / "verdicts.json"
    mined_review.verdicts_command(argparse.Namespace(judgments=judgments, output=output))

    read = read_verdicts_file(str(output))
    by_name = {f.split("/")[-1]: v for f, v in read.images.items()}
    assert by_name == {
        "a.png": "negative",
        "b.png": "object",
        "c.png": "unsure",
        "d.png": "negative",
    }
    judged = {f.split("/")[-1]: d for f, d in read.detections.items()}
    assert judged["a.png"] == [{"box": [10.0, 10.0, 30.0, 30.0], "verdict": "false_alarm"}]
    assert judged["b.png"] == [{"box": BOX_B1, "verdict": "object"}]  # b's background box is not
    assert set(judged) == {"a.png", "b.png"}  # named: the image leaves training with it
    selection = json.loads((run_dir / "mining" / "round_1_selection.json").read_text())
    recorded = {i["file_name"]: i["detections"] for i in selection["images"]}
    matched = match_mined_detections(read.detections, recorded, str(output), str(run_dir))
    assert {f.split("/")[-1] for f in matched} == {"a.png", "b.png"}  # the run's boxes, matched


def test_a_box_left_unjudged_is_named(run_dir, tmp_path):
    sheets(run_dir, tmp_path / "review", [])
    args = argparse.Namespace(
        judgments=tmp_path / "review" / "judgments.json", output=tmp_path / "v.json"
    )
    with pytest.raises(SystemExit, match=r"boxes \[0, 1, 2, 3\] have no verdict"):
        mined_review.verdicts_command(args)
    assert not args.output.exists()
