"""The review page of mined images (mining/review.html): what it lists, its thumbnails, the
verdicts it starts from, and ``python -m hnm_d2.review``. Its behaviour in a browser is
test_review_browser.py's."""

import json
import os
import re
from pathlib import Path
from urllib.request import url2pathname

import pytest
from PIL import Image

from hnm_d2 import review
from hnm_d2.engine.mining_state import MiningLayout
from hnm_d2.engine.review_page import THUMBNAIL_PIXELS, write_review_page
from hnm_d2.engine.verdicts import verdicts_document
from hnm_d2.utils.atomic import write_json_atomically


def detections(*scores):
    boxes = [[4.0 * i, 2.0, 4.0 * i + 10, 12.0] for i in range(len(scores))]
    return {"boxes": boxes, "scores": list(scores), "classes": [0] * len(scores)}


def chosen(path, score):
    """A chosen image's entry, as a selection file has it."""
    entry = {"file_name": str(path), "image_id": 1, "score": score, "dataset": "pool"}
    return {**entry, "detections": detections(score, score / 2)}


def page_data(layout):
    """The data the page's script reads (its #review-data element), and the page's HTML."""
    text = Path(layout.review_page).read_text()
    match = re.search(
        r'<script type="application/json" id="review-data">(.*?)</script>', text, re.S
    )
    return json.loads(match.group(1)), text


def resolve(layout, link):
    return Path(layout.root, url2pathname(link)).resolve()


@pytest.fixture
def rounds_run(tmp_path, write_image):
    """A mining folder with round 1 choosing two images and round 2 one, as mining writes them."""
    layout = MiningLayout(str(tmp_path / "out"))
    images = [write_image(f"pool_{k}.png", width=800, height=600, seed=k) for k in range(3)]
    rounds = {1: [chosen(images[0], 0.9), chosen(images[1], 0.6)], 2: [chosen(images[2], 0.8)]}
    for k, entries in rounds.items():
        write_json_atomically(layout.selection(k), {"thing_classes": ["target"], "images": entries})
    return layout, images


def test_the_page_lists_every_mined_image_of_every_round_with_its_detections(rounds_run):
    layout, images = rounds_run
    assert write_review_page(layout) == 3
    data, _ = page_data(layout)
    listed = [(i["key"], i["kind"], i["number"], i["rank"], i["score"]) for i in data["images"]]
    assert listed == [
        (str(images[0]), "round", 1, 1, 0.9),
        (str(images[1]), "round", 1, 2, 0.6),
        (str(images[2]), "round", 2, 1, 0.8),
    ]
    assert not any(i["drawn_at_random"] for i in data["images"])
    first = data["images"][0]
    assert first["detections"] == [
        {"box": [0.0, 2.0, 10.0, 12.0], "score": 0.9, "label": "target"},
        {"box": [4.0, 2.0, 14.0, 12.0], "score": 0.45, "label": "target"},
    ]
    assert first["size"] == [800, 600] and data["show_classes"] is False
    assert data["verdicts"] == {} and data["run"] == os.path.dirname(layout.root)
    # The zoom links the original file; the grid a small JPEG, both relative to the page.
    assert resolve(layout, first["original"]) == images[0].resolve()
    thumb = resolve(layout, first["thumb"])
    assert thumb.parent == Path(layout.review_dir).resolve()
    with Image.open(thumb) as image:
        assert image.format == "JPEG"
        assert image.size == (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS * 600 // 800)


def test_the_page_needs_nothing_but_its_folder(rounds_run):
    layout, _ = rounds_run
    write_review_page(layout)
    _, text = page_data(layout)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # no network
    assert "<link" not in text and "<script src" not in text  # script and style inlined
    assert "{{" not in text  # every field of the template filled


def test_thumbnails_are_made_once_and_again_when_the_image_changes(rounds_run):
    layout, images = rounds_run
    write_review_page(layout)
    thumbs = sorted(Path(layout.review_dir).iterdir())
    made = {p: p.stat().st_mtime_ns for p in thumbs}
    write_review_page(layout)
    assert {p: p.stat().st_mtime_ns for p in thumbs} == made
    later = max(made.values()) / 1e9 + 10
    os.utime(images[2], (later, later))
    write_review_page(layout)
    remade = [p for p in thumbs if p.stat().st_mtime_ns != made[p]]
    assert len(remade) == 1 and len(list(Path(layout.review_dir).iterdir())) == 3


def test_the_page_starts_from_the_verdicts_mining_obeys(rounds_run):
    layout, images = rounds_run
    applied = {str(images[1]): "object"}
    write_json_atomically(layout.applied_verdicts, verdicts_document(applied, {}))
    write_review_page(layout)
    assert page_data(layout)[0]["verdicts"] == applied


def test_online_steps_and_odd_file_names_are_listed(tmp_path, write_image, caplog):
    layout = MiningLayout(str(tmp_path / "out"))
    (tmp_path / "a <").mkdir()
    odd = write_image("a </script> & b.png", width=40, height=30)  # in the folder "a <"
    gone = tmp_path / "gone.png"
    step = {
        "iteration": 30,
        "thing_classes": ["a", "b"],
        "images": [chosen(odd, 0.7), chosen(gone, 0.5)],
    }
    write_json_atomically(layout.step(1), step)
    write_review_page(layout)
    data, text = page_data(layout)
    assert [(i["key"], i["kind"], i["iteration"]) for i in data["images"]] == [
        (str(odd), "step", 30),
        (str(gone), "step", 30),
    ]
    assert data["show_classes"] is True  # two classes: the labels name them
    assert data["images"][1]["thumb"] is None and data["images"][1]["size"] is None
    assert "1 mined images cannot be read" in caplog.text and str(gone) in caplog.text
    assert text.count("</script>") == 2  # the file name did not end the data's element


def test_no_page_before_mining_chose_an_image(tmp_path):
    layout = MiningLayout(str(tmp_path))
    assert write_review_page(layout) == 0
    assert not os.path.exists(layout.review_page)


def test_the_command_writes_the_page_or_says_what_is_missing(rounds_run, tmp_path, capsys):
    layout, _ = rounds_run
    assert review.main([os.path.dirname(layout.root)]) == 0
    assert page_data(layout)[0]["images"]
    with pytest.raises(SystemExit) as failed:
        review.main([str(tmp_path / "elsewhere")])
    assert failed.value.code == 2
    assert "holds no mined images" in capsys.readouterr().err


def test_a_random_selection_is_not_called_the_hardest(rounds_run):
    layout, _ = rounds_run
    with open(layout.selection(2)) as f:
        selection = json.load(f)
    write_json_atomically(layout.selection(2), {**selection, "selection": "random"})
    write_review_page(layout)
    data, _ = page_data(layout)
    assert [i["drawn_at_random"] for i in data["images"]] == [False, False, True]
