"""A person's verdicts on mined images: the verdicts file and its errors, the COCO file of the
images to annotate, and mining that obeys the verdicts, in rounds and online (the run of the
quick schedule on the synthetic data, as in test_mining.py)."""

import json
import re
import shutil
from pathlib import Path

import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, Metadata
from helpers import quick_mine_argv
from PIL import Image

from hnm_d2 import mine
from hnm_d2.engine.mining_pool import CandidatePool
from hnm_d2.engine.mining_state import (
    MiningLayout,
    check_settings,
    read_json,
    record_verdicts_file,
)
from hnm_d2.engine.online_mining import OnlineMiningData
from hnm_d2.engine.to_annotate import to_annotate_coco
from hnm_d2.engine.verdicts import (
    ObeyedVerdicts,
    Verdicts,
    VerdictsError,
    match_mined_detections,
    match_mined_images,
    read_verdicts,
    read_verdicts_file,
    verdicts_document,
)
from hnm_d2.utils.atomic import write_json_atomically

TRAIN_SIZE, POOL_SIZE = 72, 48  # synthetic_train, synthetic_pool


def write_verdicts(path, pairs):
    """A verdicts file as the review page exports it: (file_name, verdict) pairs."""
    entries = [
        {"file_name": f, "verdict": v, "mined_in": "round 1", "score": 0.5} for f, v in pairs
    ]
    Path(path).write_text(
        json.dumps({"format": "hnm_d2 verdicts", "version": 1, "verdicts": entries})
    )
    return str(path)


def write_document(path, entries, version=2):
    """A verdicts file of these entries, version 2 (detection verdicts) unless told."""
    document = {"format": "hnm_d2 verdicts", "version": version, "verdicts": entries}
    Path(path).write_text(json.dumps(document))
    return str(path)


def as_page_shows(box):
    """A recorded box as the review page names it: rounded to 0.1 pixel."""
    return [round(v, 1) for v in box]


A_BOX, B_BOX = [10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 4.0, 8.0]


# ------------------------------------------------------------------------- the file


def test_a_verdicts_file_reads_back_as_exported(tmp_path):
    path = write_verdicts(tmp_path / "v.json", [("a.png", "object"), ("b.png", "negative")])
    assert read_verdicts(path) == {"a.png": "object", "b.png": "negative"}
    document = verdicts_document({"a.png": "unsure"}, {"a.png": ("round 2", 0.7)})
    Path(path).write_text(json.dumps(document))
    assert read_verdicts(path) == {"a.png": "unsure"}
    assert document["verdicts"] == [
        {"file_name": "a.png", "verdict": "unsure", "mined_in": "round 2", "score": 0.7}
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"verdicts": [', r"v\.json is not valid JSON .*export verdicts\.json again"),
        ('[{"file_name": "a.png"}]', r'v\.json has no list "verdicts"'),
        ('{"verdicts": [{"verdict": "object"}]}', r"v\.json, entry 0 .*'file_name' is missing"),
        (
            '{"verdicts": [{"file_name": "a.png", "verdict": "object"}, '
            '{"file_name": "b.png", "verdict": "maybe"}]}',
            r"v\.json, entry 1 \(image b\.png\): field 'verdict' is 'maybe'; allowed are "
            r"'negative' .*'object' .*'unsure'",
        ),
        (
            '{"verdicts": [{"file_name": "a.png", "verdict": "object"}, '
            '{"file_name": "./a.png", "verdict": "negative"}]}',
            r"entries 0 and 1: image \./a\.png is judged 'object' and 'negative'",
        ),
    ],
)
def test_a_verdicts_file_that_does_not_parse_names_the_file_the_entry_and_the_fix(
    tmp_path, content, message
):
    path = tmp_path / "v.json"
    path.write_text(content)
    with pytest.raises(VerdictsError, match=message):
        read_verdicts(str(path), page="out/mining/review.html")


def test_a_version_2_file_judges_images_and_their_detections(tmp_path):
    false_alarm = {"box": A_BOX, "verdict": "false_alarm"}
    path = write_document(
        tmp_path / "v.json",
        [
            {"file_name": "a.png", "verdict": "negative", "detections": [false_alarm]},
            # An object detection: the image holds one, its verdict given or not.
            {
                "file_name": "b.png",
                "verdict": None,
                "detections": [{"box": B_BOX, "verdict": "object"}],
            },
            # False alarms alone judge no image.
            {"file_name": "c.png", "verdict": None, "detections": [false_alarm]},
            {"file_name": "d.png", "verdict": "unsure", "mined_in": "round 1", "score": 0.3},
        ],
    )
    read = read_verdicts_file(path)
    assert read.images == {"a.png": "negative", "b.png": "object", "d.png": "unsure"}
    assert read.detections == {
        "a.png": [false_alarm],
        "b.png": [{"box": B_BOX, "verdict": "object"}],
        "c.png": [false_alarm],
    }
    assert read_verdicts(path) == read.images
    # verdicts_document writes what the page exports, and reads back the same.
    document = verdicts_document(read.images, {"a.png": ("round 1", 0.9)}, read.detections)
    assert document["version"] == 2
    assert document["verdicts"][0] == {
        "file_name": "a.png",
        "verdict": "negative",
        "detections": [false_alarm],
        "mined_in": "round 1",
        "score": 0.9,
    }
    assert document["verdicts"][-1]["file_name"] == "c.png"
    assert document["verdicts"][-1]["verdict"] is None
    Path(path).write_text(json.dumps(document))
    assert read_verdicts_file(path) == read


def test_a_version_1_file_reads_as_image_verdicts_alone(tmp_path):
    path = write_verdicts(tmp_path / "v.json", [("a.png", "object")])
    assert read_verdicts_file(path) == Verdicts({"a.png": "object"}, {})


def entry_with(detections, verdict="negative", file_name="a.png"):
    return {"file_name": file_name, "verdict": verdict, "detections": detections}


@pytest.mark.parametrize(
    "entries, message",
    [
        (
            [entry_with([{"box": [1, 2, 3], "verdict": "false_alarm"}])],
            r"v\.json, entry 0 \(image a\.png\), detection 0: field 'box' is \[1, 2, 3\]; a box "
            r"is \[x0, y0, x1, y1\] in the image file's pixels, x0 < x1 and y0 < y1",
        ),
        (
            [entry_with([{"box": [5, 0, 1, 4], "verdict": "false_alarm"}])],
            r"detection 0: field 'box' is \[5, 0, 1, 4\]",
        ),
        (
            [entry_with([{"box": A_BOX, "verdict": "maybe"}])],
            r"entry 0 \(image a\.png\), detection 0 \(box \[10\.0, 5\.0, 30\.0, 25\.0\]\): field "
            r"'verdict' is 'maybe'; allowed are 'false_alarm' .*and 'object'",
        ),
        (
            [entry_with([{"box": A_BOX, "verdict": "object"}], verdict="unsure")],
            r"entry 0 \(image a\.png\): the image is judged 'unsure', but one of its detections "
            r"'object'.*Fix the entry, or judge the images on the review page",
        ),
        (
            [entry_with([], verdict=None)],
            r"entry 0 \(image a\.png\): field 'verdict' is None; .*\(or null when 'detections' "
            r"judges some\)",
        ),
        ([entry_with("all")], r"entry 0 \(image a\.png\): field 'detections' is 'all', not a list"),
        (
            [
                entry_with(
                    [
                        {"box": A_BOX, "verdict": "false_alarm"},
                        {"box": [10.2, 5, 30, 25], "verdict": "object"},
                    ],
                    verdict="object",
                )
            ],
            r"entry 0 \(image a\.png\): the detection at box \[10\.2, 5\.0, 30\.0, 25\.0\] is "
            r"judged 'false_alarm' and 'object'",
        ),
        (
            [entry_with([]), entry_with([{"box": A_BOX, "verdict": "false_alarm"}])],
            r"entries 0 and 1: image a\.png is judged 'negative' and 'negative' with 1 detections "
            r"judged",
        ),
    ],
)
def test_a_detection_verdict_that_does_not_parse_names_the_file_the_image_and_the_fix(
    tmp_path, entries, message
):
    path = write_document(tmp_path / "v.json", entries)
    with pytest.raises(VerdictsError, match=message):
        read_verdicts_file(path, page="out/mining/review.html")


def test_a_verdicts_file_of_a_later_version_is_refused(tmp_path):
    path = write_document(tmp_path / "v.json", [entry_with([])], version=3)
    with pytest.raises(
        VerdictsError, match=r"v\.json has version 3; this hnm_d2 reads versions 1, 2\. Update"
    ):
        read_verdicts_file(path)


def test_a_missing_verdicts_file_is_named(tmp_path):
    with pytest.raises(VerdictsError, match=r"absent\.json cannot be read"):
        read_verdicts(str(tmp_path / "absent.json"))


def test_verdicts_are_matched_to_the_mined_images_however_their_path_is_spelled(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    mined = [str(tmp_path / "pool" / "a.png"), str(tmp_path / "pool" / "b.png")]
    verdicts = {"pool/../pool/a.png": "object", "./pool/b.png": "unsure"}
    assert match_mined_images(verdicts, mined, "v.json", "out/mining") == {
        mined[0]: "object",
        mined[1]: "unsure",
    }
    with pytest.raises(
        VerdictsError,
        match=r"v\.json: image pool/c\.png \(and 1 more such images\) was never chosen by the "
        r"mining run in out/mining.*Remove its entry.*out/mining/review\.html",
    ):
        match_mined_images(
            {"pool/c.png": "object", "d.png": "negative"}, mined, "v.json", "out/mining"
        )


def test_detection_verdicts_are_matched_to_the_boxes_mining_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mined = str(tmp_path / "pool" / "a.png")
    recorded_box = [10.04, 5.0, 30.0, 25.0]  # the page shows it as A_BOX
    recorded = {mined: {"boxes": [recorded_box, B_BOX], "scores": [0.9, 0.4], "classes": [0, 0]}}
    judged = {"./pool/a.png": [{"box": A_BOX, "verdict": "false_alarm"}]}
    assert match_mined_detections(judged, recorded, "v.json", "out/mining") == {
        mined: [{"box": recorded_box, "verdict": "false_alarm"}]
    }
    elsewhere = {mined: [{"box": [11.0, 5.0, 30.0, 25.0], "verdict": "object"}]}
    with pytest.raises(
        VerdictsError,
        match=re.escape(
            f"v.json, image {mined}: the detection at box [11.0, 5.0, 30.0, 25.0], judged "
            "'object', is none of those mining recorded on that image ([[10.0, 5.0, 30.0, 25.0], "
            "[0.0, 0.0, 4.0, 8.0]]; a box matches within 0.5 pixel). Remove it, or give the "
            "verdicts exported from this run's review page (out/mining/review.html)."
        ),
    ):
        match_mined_detections(elsewhere, recorded, "v.json", "out/mining")
    with pytest.raises(VerdictsError, match=r"image pool/b\.png was never chosen"):
        match_mined_detections({"pool/b.png": judged["./pool/a.png"]}, recorded, "v.json", "m")


def test_an_image_that_trains_carries_its_false_alarm_boxes_as_negative_boxes():
    obeyed = ObeyedVerdicts({"b": "object", "c": "negative"}, {"a": [A_BOX], "b": [B_BOX]})
    record = {"file_name": "a", "image_id": 1}
    assert obeyed.training_record(record) == {**record, "negative_boxes": [A_BOX]}
    assert record == {"file_name": "a", "image_id": 1}  # the pool's own record is left alone
    assert obeyed.training_record({"file_name": "c"}) == {"file_name": "c"}
    # Held out of training, an image trains with no box.
    assert obeyed.negative_boxes == {"a": [A_BOX]}
    assert obeyed.false_alarm_boxes(["a", "b", "c"]) == 1
    # Boxes a dataset gave already are kept.
    given = {"file_name": "a", "negative_boxes": [B_BOX]}
    assert obeyed.training_record(given)["negative_boxes"] == [B_BOX, A_BOX]


def test_online_mining_streams_the_pool_images_with_their_negative_boxes(dataset_name):
    train, pool = dataset_name(), dataset_name()
    DatasetCatalog.register(train, lambda: [{"file_name": "t.png", "image_id": 0}])
    DatasetCatalog.register(
        pool, lambda: [{"file_name": f, "image_id": i} for i, f in enumerate(["a.png", "b.png"])]
    )
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (train,)
    verdicts = ObeyedVerdicts({}, {"b.png": [A_BOX]})
    data = OnlineMiningData(cfg, CandidatePool([pool]), verdicts)
    assert [r.get("negative_boxes") for r in data.dataset_dicts] == [None, None, [A_BOX]]


# ------------------------------------------------------------------ to_annotate.json


def test_to_annotate_is_a_coco_file_of_the_images_with_their_detections(tmp_path, write_image):
    (tmp_path / "pool" / "sub").mkdir(parents=True)
    first = write_image("pool/sub/a.png", width=64, height=48)
    second = write_image("pool/b.png", width=30, height=20)
    detections = {
        "boxes": [[10.0, 5.0, 30.0, 25.0], [0, 0, 4, 8]],
        "scores": [0.9, 0.4],
        "classes": [1, 0],
    }
    images = [{"file_name": str(first), "detections": detections}, {"file_name": str(second)}]
    # A COCO training set keeps its category ids (here 3 and 7).
    metadata = Metadata(
        thing_classes=["cat", "dog"], thing_dataset_id_to_contiguous_id={3: 0, 7: 1}
    )
    coco = to_annotate_coco(images, metadata, str(tmp_path / "out" / "mining"))

    assert coco["categories"] == [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    assert coco["info"]["images_root"] == str(tmp_path / "pool")
    assert coco["images"] == [
        {"id": 1, "file_name": "sub/a.png", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.png", "width": 30, "height": 20},
    ]
    assert coco["annotations"] == [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 7,
            "bbox": [10.0, 5.0, 20.0, 20.0],
            "area": 400.0,
            "iscrowd": 0,
            "score": 0.9,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 3,
            "bbox": [0, 0, 4, 8],
            "area": 32,
            "iscrowd": 0,
            "score": 0.4,
        },
    ]
    # Without a COCO mapping, categories are numbered from 1 as COCO files are.
    plain = to_annotate_coco(images, Metadata(thing_classes=["cat", "dog"]), "out")
    assert [a["category_id"] for a in plain["annotations"]] == [2, 1]


def test_to_annotate_sizes_are_those_of_the_upright_image(tmp_path):
    # A JPEG stored 40 x 30 whose EXIF orientation turns it: detectron2 reads it 30 x 40.
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30)).save(path, exif=exif)
    coco = to_annotate_coco([{"file_name": str(path)}], Metadata(thing_classes=["x"]), "out")
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (30, 40)


# ---------------------------------------------------------------- settings and pool


def test_each_new_verdicts_file_is_recorded_in_the_settings_and_a_resume_still_matches(tmp_path):
    layout = MiningLayout(str(tmp_path))
    settings = {"per_round": 3.0, "SEED": 0}
    write_json_atomically(layout.settings, settings)
    path = write_verdicts(tmp_path / "v.json", [("a.png", "object")])
    record_verdicts_file(layout, path, {"object": 1})
    record_verdicts_file(layout, path, {"object": 1})  # the same file again: recorded once
    write_verdicts(path, [("a.png", "negative")])
    record_verdicts_file(layout, path, {"negative": 1})
    recorded = read_json(layout.settings)
    files = recorded["verdicts_files"]
    assert [(f["file"], f["verdicts"]) for f in files] == [
        (path, {"object": 1}),
        (path, {"negative": 1}),
    ]
    assert files[0]["sha256"] != files[1]["sha256"] and files[0]["given_at"]
    check_settings(recorded, settings, layout.settings)  # a resume is not refused for them


def test_images_set_aside_are_never_candidates_again(dataset_name):
    name = dataset_name()
    DatasetCatalog.register(
        name, lambda: [{"file_name": f, "image_id": i} for i, f in enumerate("abcd")]
    )
    pool = CandidatePool([name])
    pool.take(["a"], "sel.json")
    assert pool.set_aside(["a", "b", "not-in-pool"]) == 1  # a is taken already
    assert [r["file_name"] for r in pool.remaining()] == ["c", "d"]


# -------------------------------------------------------------- mining obeys them


def mined_images(out, name):
    return [image["file_name"] for image in read_json(out / "mining" / name)["images"]]


@pytest.fixture(scope="module")
def obeyed(one_mined_round, synthetic_root, tmp_path_factory):
    """Round 1's 3 images judged object / unsure / clean, then round 2 mined with them."""
    out = Path(shutil.copytree(one_mined_round, tmp_path_factory.mktemp("obeyed") / "run"))
    first = mined_images(out, "round_1_selection.json")
    pairs = list(zip(first, ["object", "unsure", "negative"]))
    verdicts = write_verdicts(out / "verdicts.json", pairs)
    mine.main(
        quick_mine_argv(
            synthetic_root, out, "--rounds", 2, "--per-round", 3, "--verdicts", verdicts
        )
    )
    return {"out": out, "mining": out / "mining", "first": first, "verdicts": verdicts}


def test_the_next_round_trains_without_the_images_judged_object_or_unsure(obeyed):
    round_2 = read_json(obeyed["mining"] / "round_2.json")
    # synthetic_train, round 1's clean negative, and round 2's 3 new images.
    assert round_2["train_size"] == TRAIN_SIZE + 1 + 3
    registered = [r["file_name"] for r in DatasetCatalog.get("hnm_mined_round_1")]
    assert registered == [obeyed["first"][2]]
    # Out of the pool too: round 2 chose none of them.
    second = mined_images(obeyed["out"], "round_2_selection.json")
    assert len(second) == 3 and not set(second) & set(obeyed["first"])
    assert round_2["pool_size_after"] == POOL_SIZE - 6


def test_the_report_says_what_each_verdict_moved(obeyed):
    mining = obeyed["mining"]
    assert read_json(mining / "report.json")["verdicts"] == {
        "applied_file": str(mining / "verdicts_applied.json"),
        "images_judged": 3,
        "kept_as_negatives": 1,
        "moved_to_annotate": 1,
        "withheld_as_unsure": 1,
        "to_annotate_file": str(mining / "to_annotate.json"),
    }
    assert (
        "1 hold an object and leave training and the pool"
        in (obeyed["out"] / "log.txt").read_text()
    )


def test_the_images_holding_an_object_are_written_to_annotate_with_their_detections(obeyed):
    to_annotate = read_json(obeyed["mining"] / "to_annotate.json")
    selected = read_json(obeyed["mining"] / "round_1_selection.json")["images"][0]
    root = Path(to_annotate["info"]["images_root"])
    assert [root / image["file_name"] for image in to_annotate["images"]] == [
        Path(selected["file_name"])
    ]
    assert to_annotate["images"][0]["width"] == to_annotate["images"][0]["height"] == 128
    assert to_annotate["categories"] == [{"id": 1, "name": "target"}]
    boxes = [a["bbox"] for a in to_annotate["annotations"]]
    assert [a["score"] for a in to_annotate["annotations"]] == selected["detections"]["scores"]
    assert boxes == [
        [x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in selected["detections"]["boxes"]
    ]


def test_the_verdicts_are_recorded_and_obeyed_on_every_later_resume(obeyed, synthetic_root):
    mining = obeyed["mining"]
    settings = read_json(mining / "settings.json")
    assert [f["file"] for f in settings["verdicts_files"]] == [obeyed["verdicts"]]
    # The same command without --verdicts: the applied ones still hold.
    mine.main(quick_mine_argv(synthetic_root, obeyed["out"], "--rounds", 2, "--per-round", 3))
    assert read_json(mining / "report.json")["verdicts"]["moved_to_annotate"] == 1
    assert [r["file_name"] for r in DatasetCatalog.get("hnm_mined_round_1")] == [obeyed["first"][2]]
    # A new file given on resume (the unsure image judged clean) is merged and recorded.
    later = write_verdicts(obeyed["out"] / "later.json", [(obeyed["first"][1], "negative")])
    mine.main(
        quick_mine_argv(
            synthetic_root, obeyed["out"], "--rounds", 2, "--per-round", 3, "--verdicts", later
        )
    )
    report = read_json(mining / "report.json")["verdicts"]
    assert (report["kept_as_negatives"], report["withheld_as_unsure"]) == (2, 0)
    files = read_json(mining / "settings.json")["verdicts_files"]
    assert [f["file"] for f in files] == [obeyed["verdicts"], later]
    assert read_verdicts(str(mining / "verdicts_applied.json")) == dict(
        zip(obeyed["first"], ["object", "negative", "negative"])
    )


def test_a_verdict_on_an_image_mining_never_chose_fails_before_training(mined_run, synthetic_root):
    chosen = set(mined_images(mined_run, "round_1_selection.json"))
    other = next(
        r["file_name"] for r in DatasetCatalog.get("synthetic_pool") if r["file_name"] not in chosen
    )
    verdicts = write_verdicts(mined_run / "v.json", [(other, "object")])
    with pytest.raises(VerdictsError, match=re.escape(f"image {other} was never chosen")):
        mine.main(
            quick_mine_argv(
                synthetic_root, mined_run, "--rounds", 2, "--per-round", 3, "--verdicts", verdicts
            )
        )
    assert not (mined_run / "mining" / "round_2").exists()
    assert not (mined_run / "mining" / "verdicts_applied.json").exists()


def test_a_resumed_online_run_trains_without_the_withheld_images(synthetic_root, tmp_path):
    # 9 iterations, mining 3 images after iterations 3 and 6; a checkpoint after each.
    flags = ["--online", "--rounds", 2, "--per-round", 3]
    schedule = ["SOLVER.MAX_ITER", 9, "SOLVER.CHECKPOINT_PERIOD", 3]
    mine.main(quick_mine_argv(synthetic_root, tmp_path, *flags, *schedule))
    mining, training = tmp_path / "mining", tmp_path / "mining" / "online"
    step_1 = mined_images(tmp_path, "step_1.json")
    # As if killed after step 1's checkpoint, then resumed with verdicts on step 1's images.
    (training / "last_checkpoint").write_text("model_0000002.pth")
    (training / "model_final.pth").unlink()
    verdicts = write_verdicts(tmp_path / "v.json", zip(step_1, ["object", "unsure"]))
    mine.main(quick_mine_argv(synthetic_root, tmp_path, *flags, "--verdicts", verdicts, *schedule))

    log = (tmp_path / "log.txt").read_text()
    assert "Mining step 1: 2 of its images are left out of training by the verdicts." in log
    report = read_json(mining / "report.json")
    assert (report["verdicts"]["moved_to_annotate"], report["verdicts"]["withheld_as_unsure"]) == (
        1,
        1,
    )
    assert not set(mined_images(tmp_path, "step_2.json")) & set(step_1)
    assert len(read_json(mining / "to_annotate.json")["images"]) == 1
    assert (mining / "review.html").is_file()


# ----------------------------------------------------------- mining obeys detection verdicts


def detections_of(image):
    return [
        {"box": box, "score": score}
        for box, score in zip(image["detections"]["boxes"], image["detections"]["scores"])
    ]


@pytest.fixture(scope="module")
def boxes_judged(one_mined_round, synthetic_root, tmp_path_factory):
    """Round 1's 3 images and their detections judged on the page, then round 2 mined with the
    export: the first image clean, its best box a false alarm; the second unjudged but its
    second box an object (its best a false alarm); the third unjudged, its 2 best boxes false
    alarms."""
    out = Path(shutil.copytree(one_mined_round, tmp_path_factory.mktemp("boxes") / "run"))
    first, second, third = read_json(out / "mining" / "round_1_selection.json")["images"]
    assert min(len(image["detections"]["boxes"]) for image in (second, third)) >= 2

    def judged(image, *verdicts):
        boxes = [as_page_shows(box) for box in image["detections"]["boxes"]]
        return [{"box": box, "verdict": v} for box, v in zip(boxes, verdicts) if v]

    entries = [
        entry_with(judged(first, "false_alarm"), "negative", first["file_name"]),
        entry_with(judged(second, "false_alarm", "object"), None, second["file_name"]),
        entry_with(judged(third, "false_alarm", "false_alarm"), None, third["file_name"]),
    ]
    verdicts = write_document(out / "verdicts.json", entries)
    flags = ["--rounds", 2, "--per-round", 3, "--verdicts", verdicts]
    mine.main(quick_mine_argv(synthetic_root, out, *flags))
    return {"out": out, "mining": out / "mining", "images": (first, second, third)}


def test_false_alarm_boxes_join_the_training_set_with_their_images(boxes_judged):
    first, second, third = boxes_judged["images"]
    # The second image holds an object: out of training. The others train with the recorded
    # boxes (not the page's rounded ones) as background.
    trained = {r["file_name"]: r for r in DatasetCatalog.get("hnm_mined_round_1")}
    assert list(trained) == [first["file_name"], third["file_name"]]
    assert trained[first["file_name"]]["negative_boxes"] == first["detections"]["boxes"][:1]
    assert trained[third["file_name"]]["negative_boxes"] == third["detections"]["boxes"][:2]
    round_2 = read_json(boxes_judged["mining"] / "round_2.json")
    assert round_2["train_size"] == TRAIN_SIZE + 2 + 3
    # Round 2's images are not judged: no box of theirs trains as background.
    assert all("negative_boxes" not in r for r in DatasetCatalog.get("hnm_mined_round_2"))


def test_the_report_counts_the_false_alarm_boxes_of_each_round(boxes_judged):
    report = read_json(boxes_judged["mining"] / "report.json")
    assert [r["false_alarm_boxes"] for r in report["rounds"]] == [0, 3, 0]
    assert report["verdicts"]["moved_to_annotate"] == 1
    log = (boxes_judged["out"] / "log.txt").read_text()
    assert (
        "3 detections judged false alarms train as background (negative_boxes) with their " in log
    )
    assert "3 boxes judged false alarms train as background" in log
    files = read_json(boxes_judged["mining"] / "settings.json")["verdicts_files"]
    counts = files[-1]["verdicts"]
    assert (counts["detections_false_alarm"], counts["detections_object"]) == (4, 1)


def test_an_object_box_sends_its_image_to_annotate_without_its_false_alarms(boxes_judged):
    second = boxes_judged["images"][1]
    to_annotate = read_json(boxes_judged["mining"] / "to_annotate.json")
    root = Path(to_annotate["info"]["images_root"])
    assert [str(root / image["file_name"]) for image in to_annotate["images"]] == [
        second["file_name"]
    ]
    # Its best box, judged a false alarm, is no pre-annotation; the object box is one.
    kept = detections_of(second)[1:]
    assert [a["score"] for a in to_annotate["annotations"]] == [d["score"] for d in kept]
    assert [a["bbox"] for a in to_annotate["annotations"]] == [
        [x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in (d["box"] for d in kept)
    ]


def test_the_detection_verdicts_are_kept_for_every_later_resume(boxes_judged, synthetic_root):
    first, second, third = boxes_judged["images"]
    applied = read_verdicts_file(str(boxes_judged["mining"] / "verdicts_applied.json"))
    assert applied.images == {first["file_name"]: "negative", second["file_name"]: "object"}
    boxes = second["detections"]["boxes"]
    assert applied.detections[second["file_name"]] == [
        {"box": boxes[0], "verdict": "false_alarm"},
        {"box": boxes[1], "verdict": "object"},
    ]
    # Resumed without --verdicts: the same boxes train as background.
    mine.main(quick_mine_argv(synthetic_root, boxes_judged["out"], "--rounds", 2, "--per-round", 3))
    trained = {r["file_name"]: r for r in DatasetCatalog.get("hnm_mined_round_1")}
    assert trained[third["file_name"]]["negative_boxes"] == third["detections"]["boxes"][:2]


def test_a_verdict_on_a_box_mining_never_recorded_fails_before_training(mined_run, synthetic_root):
    image = read_json(mined_run / "mining" / "round_1_selection.json")["images"][0]
    nowhere = [0.0, 0.0, 1.0, 1.0]
    entry = entry_with([{"box": nowhere, "verdict": "false_alarm"}], None, image["file_name"])
    verdicts = write_document(mined_run / "v.json", [entry])
    flags = ["--rounds", 2, "--per-round", 3, "--verdicts", verdicts]
    message = (
        f"image {image['file_name']}: the detection at box {nowhere}, judged 'false_alarm', is "
        "none of those mining recorded on that image"
    )
    with pytest.raises(VerdictsError, match=re.escape(message)):
        mine.main(quick_mine_argv(synthetic_root, mined_run, *flags))
    assert not (mined_run / "mining" / "round_2").exists()
    assert not (mined_run / "mining" / "verdicts_applied.json").exists()
