"""A person's verdicts on the images mining chose and on their detections, and how a mining run
obeys them.

Mining chooses the pool images the model fires on most; on real data many of them hold an
object nobody annotated, and mining would teach them as background. On the review page
(:mod:`hnm_d2.engine.review_page`) a person judges each chosen image:

    negative   a clean negative: it stays a training negative
    object     it holds an object: it leaves the training negatives (and the pool) and goes to
               mining/to_annotate.json, its detections as pre-annotations
    unsure     it is left out of training until judged

and, if they wish, each of its detections (the boxes mining recorded, best first):

    false_alarm  the box holds no object: while the image trains, the box goes with it as one
                 of its "negative_boxes" (XYXY_ABS), trained as background every time the image
                 is seen; it is left out of the image's pre-annotations
    object       the box holds an object, so the image does: it is judged "object"

An image verdict stays the person's own: detections all judged false alarms do not make an
image a clean negative (an unjudged image trains as mined, its false-alarm boxes with it), and
a clean or unsure image with a detection judged "object" is an error.

The verdicts file, as the page exports it (only "file_name", "verdict", "detections" and their
"box" and "verdict" are read; the rest is for a person reading the file):

    {"format": "hnm_d2 verdicts", "version": 2,
     "verdicts": [{"file_name": "/data/pool/0042.png", "verdict": "negative",
                   "detections": [{"box": [12.5, 40.0, 88.1, 97.3], "verdict": "false_alarm",
                                   "score": 0.93, "label": "platelet"}],
                   "mined_in": "round 1", "score": 0.93}, ...]}

"verdict" may be null when "detections" judges some (or "object" is implied by one of them).
Version 1 files, of image verdicts alone, read as before. A detection is named by its box, in
the pixels of the image as detectron2 reads the file (upright, after its EXIF orientation: the
frame of the annotations and of the recorded detections), and matches the detection mining
recorded within BOX_TOLERANCE pixels (the page rounds boxes to 0.1 pixel); a box matching none
is an error.

An image is named by its file, compared as its real path (:mod:`hnm_d2.data.identity`). A run
given a verdicts file (``--verdicts``, HNM.MINING.VERDICTS) merges it into
mining/verdicts_applied.json, a later entry on an image replacing an earlier one (its detection
verdicts included); every later resume obeys that file too, so an image judged to hold an object
never comes back silently, and settings.json lists each file given
(:func:`hnm_d2.engine.mining_state.record_verdicts_file`).
"""

import json
import logging
import math
import os
from typing import NamedTuple

from detectron2.utils import comm

from ..data.identity import image_identity
from ..utils.atomic import write_json_atomically
from .mining_state import main_process_value, read_choices, record_verdicts_file
from .to_annotate import to_annotate_coco

__all__ = [
    "VERDICTS",
    "DETECTION_VERDICTS",
    "WITHHELD",
    "BOX_TOLERANCE",
    "VerdictsError",
    "Verdicts",
    "read_verdicts_file",
    "read_verdicts",
    "match_mined_images",
    "match_mined_detections",
    "verdicts_document",
    "ObeyedVerdicts",
    "obey_verdicts",
]

logger = logging.getLogger(__name__)

VERDICTS = ("negative", "object", "unsure")
DETECTION_VERDICTS = ("false_alarm", "object")
WITHHELD = frozenset({"object", "unsure"})  # kept out of training
FORMAT, VERSION = "hnm_d2 verdicts", 2
READABLE_VERSIONS = (1, 2)  # 1: image verdicts alone
BOX_TOLERANCE = 0.5  # pixels, per coordinate: the page shows boxes rounded to 0.1 pixel


class VerdictsError(ValueError):
    """A verdicts file that cannot be obeyed; the message names the file, the image and the fix."""


class Verdicts(NamedTuple):
    """The verdicts of a file, or of every file a run obeys.

    Attributes:
        images (dict): file_name -> "negative", "object" or "unsure", for each image judged
            (or holding a detection judged "object").
        detections (dict): file_name -> list of {"box": [x0, y0, x1, y1], "verdict":
            "false_alarm" | "object"}, for each image with a detection judged.
    """

    images: dict
    detections: dict


def _judge_again(page):
    where = f"the review page ({page})" if page else "the run's review page (mining/review.html)"
    return f"judge the images on {where} and export verdicts.json again"


def _load_json(path, page):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise VerdictsError(
            f"Verdicts file {path} cannot be read ({e.strerror}): give the path of the "
            "verdicts.json that the review page exported."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VerdictsError(
            f"Verdicts file {path} is not valid JSON ({e}): fix it, or {_judge_again(page)}."
        ) from None


def _listed_entries(document, path, page):
    """The file's "verdicts" list, once its version is known to be readable."""
    entries = document.get("verdicts") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise VerdictsError(
            f'Verdicts file {path} has no list "verdicts": a verdicts file is '
            '{"verdicts": [{"file_name": ..., "verdict": "negative" | "object" | "unsure"}, ...]}'
            f"; {_judge_again(page)}."
        )
    version = document.get("version", 1)  # the first files had none
    if version not in READABLE_VERSIONS:
        raise VerdictsError(
            f"Verdicts file {path} has version {version!r}; this hnm_d2 reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Update hnm_d2 (a later one wrote it), or "
            f"{_judge_again(page)}."
        )
    return entries


def _file_name(entry, index, path, page):
    file_name = entry.get("file_name") if isinstance(entry, dict) else None
    if not isinstance(file_name, str) or not file_name:
        raise VerdictsError(
            f"Verdicts file {path}, entry {index} ({entry!r}): field 'file_name' is missing "
            f"or not a path. Fix the entry, or {_judge_again(page)}."
        )
    return file_name


def _is_box(box):
    if not isinstance(box, list) or len(box) != 4:
        return False
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        return False
    return box[0] < box[2] and box[1] < box[3]


def _same_box(a, b):
    return all(abs(x - y) <= BOX_TOLERANCE for x, y in zip(a, b))


def _detection_verdict(detection, where, number, path, page):
    """One checked entry of an image's "detections": {"box", "verdict"}."""
    box = detection.get("box") if isinstance(detection, dict) else None
    if not _is_box(box):
        raise VerdictsError(
            f"Verdicts file {path}, {where}, detection {number}: field 'box' is {box!r}; a box "
            "is [x0, y0, x1, y1] in the image file's pixels, x0 < x1 and y0 < y1. Fix the "
            f"entry, or {_judge_again(page)}."
        )
    verdict = detection.get("verdict")
    if verdict not in DETECTION_VERDICTS:
        raise VerdictsError(
            f"Verdicts file {path}, {where}, detection {number} (box {box}): field 'verdict' is "
            f"{verdict!r}; allowed are 'false_alarm' (no object in the box) and 'object'. Fix "
            f"the entry, or {_judge_again(page)}."
        )
    return {"box": [float(v) for v in box], "verdict": verdict}


def _detection_verdicts(entry, where, path, page):
    """The entry's judged detections, checked; [] when it has none (a version 1 entry)."""
    listed = entry.get("detections", [])
    if not isinstance(listed, list):
        raise VerdictsError(
            f"Verdicts file {path}, {where}: field 'detections' is {listed!r}, not a list of "
            f'{{"box": [x0, y0, x1, y1], "verdict": "false_alarm" | "object"}}. Fix the entry, '
            f"or {_judge_again(page)}."
        )
    detections = []
    for number, detection in enumerate(listed):
        judged = _detection_verdict(detection, where, number, path, page)
        for earlier in detections:
            if _same_box(earlier["box"], judged["box"]) and earlier["verdict"] != judged["verdict"]:
                raise VerdictsError(
                    f"Verdicts file {path}, {where}: the detection at box {judged['box']} is "
                    f"judged '{earlier['verdict']}' and '{judged['verdict']}'. Keep the one you "
                    "mean."
                )
        detections.append(judged)
    return detections


def _image_verdict(entry, detections, where, path, page):
    """The entry's image verdict: its own, or "object" implied by a detection; None when the
    entry judges detections alone."""
    verdict = entry.get("verdict")
    holds_object = any(d["verdict"] == "object" for d in detections)
    if verdict is None and detections:
        return "object" if holds_object else None
    if verdict not in VERDICTS:
        raise VerdictsError(
            f"Verdicts file {path}, {where}: field 'verdict' is {verdict!r}; allowed are "
            "'negative' (a clean negative), 'object' (holds an object) and 'unsure' (or null "
            f"when 'detections' judges some). Fix the entry, or {_judge_again(page)}."
        )
    if holds_object and verdict != "object":
        raise VerdictsError(
            f"Verdicts file {path}, {where}: the image is judged '{verdict}', but one of its "
            "detections 'object'; an image holding an object is judged 'object'. Fix the "
            f"entry, or {_judge_again(page)}."
        )
    return verdict


def read_verdicts_file(path, page=None):
    """The verdicts of a verdicts file (version 1 or 2).

    Args:
        path (str): the file.
        page (str or None): the review page to name in the fix of an error.

    Returns:
        Verdicts: file_names as the file spells them, in the file's order.

    Raises:
        VerdictsError: the file cannot be read or parsed, has a version this hnm_d2 does not
            read or no "verdicts" list, an entry lacks "file_name", has a verdict other than
            VERDICTS (null allowed beside judged detections), a detection without a box or
            with a verdict other than DETECTION_VERDICTS, a clean or unsure image with a
            detection judged "object", or an image or a box is judged twice differently; the
            message names the file, the entry, the image and the fix.
    """
    entries = _listed_entries(_load_json(path, page), path, page)
    judged, first_entry = {}, {}
    for index, entry in enumerate(entries):
        file_name = _file_name(entry, index, path, page)
        where = f"entry {index} (image {file_name})"
        detections = _detection_verdicts(entry, where, path, page)
        judgement = (_image_verdict(entry, detections, where, path, page), detections)
        earlier = first_entry.setdefault(image_identity(file_name), (index, file_name))
        if earlier[0] != index and judged[earlier[1]] != judgement:
            raise VerdictsError(
                f"Verdicts file {path}, entries {earlier[0]} and {index}: image {file_name} is "
                f"judged {_describe(judged[earlier[1]])} and {_describe(judgement)}. Keep the "
                "one you mean."
            )
        judged[earlier[1]] = judgement
    return Verdicts(
        images={f: verdict for f, (verdict, _) in judged.items() if verdict is not None},
        detections={f: detections for f, (_, detections) in judged.items() if detections},
    )


def _describe(judgement):
    verdict, detections = judgement
    if not detections:
        return f"'{verdict}'"
    return f"'{verdict}' with {len(detections)} detections judged"


def read_verdicts(path, page=None):
    """The image verdicts of a verdicts file: :func:`read_verdicts_file`'s ``images``.

    Returns:
        dict: file_name (as the file spells it) -> verdict, in the file's order.
    """
    return read_verdicts_file(path, page).images


def match_mined_images(verdicts, mined_file_names, path, mining_dir):
    """The verdicts on the images mining chose, each named as mining named it.

    Args:
        verdicts (dict): file_name -> its verdicts (a :class:`Verdicts` field).
        mined_file_names (Iterable[str]): the file_name of every image mining chose.
        path (str): the verdicts file, for the message.
        mining_dir (str): OUTPUT_DIR/mining of the run, for the message.

    Returns:
        dict: mined file_name -> the same verdicts.

    Raises:
        VerdictsError: a verdict names an image that mining never chose.
    """
    mined = {image_identity(f): f for f in mined_file_names}
    unknown = [f for f in verdicts if image_identity(f) not in mined]
    if unknown:
        more = f" (and {len(unknown) - 1} more such images)" if len(unknown) > 1 else ""
        raise VerdictsError(
            f"Verdicts file {path}: image {unknown[0]}{more} was never chosen by the mining run in "
            f"{mining_dir}: no round_K_selection.json or step_K.json there lists it, and verdicts "
            "apply to mined images only. Remove its entry, or give the verdicts exported from "
            f"this run's review page ({_page_of(mining_dir)}); verdicts on another OUTPUT_DIR's "
            "images do not apply here."
        )
    return {mined[image_identity(f)]: verdict for f, verdict in verdicts.items()}


def _page_of(mining_dir):
    return os.path.join(mining_dir, "review.html")


def _recorded_at(box, recorded_boxes):
    """Indices of the recorded boxes that ``box`` names (coincident ones: one box on the page)."""
    return [i for i, recorded in enumerate(recorded_boxes) if _same_box(box, recorded)]


def _matched_detections(file_name, judged, recorded_boxes, path, mining_dir):
    """One image's detection verdicts on the boxes mining recorded, recorded index order."""
    verdicts = {}
    for detection in judged:
        indices = _recorded_at(detection["box"], recorded_boxes)
        if not indices:
            recorded = [[round(v, 1) for v in box] for box in recorded_boxes]
            raise VerdictsError(
                f"Verdicts file {path}, image {file_name}: the detection at box "
                f"{detection['box']}, judged '{detection['verdict']}', is none of those mining "
                f"recorded on that image ({recorded or 'none'}; a box matches within "
                f"{BOX_TOLERANCE} pixel). Remove it, or give the verdicts exported from this "
                f"run's review page ({_page_of(mining_dir)})."
            )
        for index in indices:
            verdicts.setdefault(index, detection["verdict"])
    return [{"box": recorded_boxes[i], "verdict": verdicts[i]} for i in sorted(verdicts)]


def match_mined_detections(detections, mined_detections, path, mining_dir):
    """The detection verdicts on the detections mining recorded, each named as mining named it.

    Args:
        detections (dict): :attr:`Verdicts.detections`.
        mined_detections (dict): mined file_name -> the detections mining recorded on it
            ("boxes" XYXY_ABS, best first).
        path (str): the verdicts file, for the message.
        mining_dir (str): OUTPUT_DIR/mining of the run, for the message.

    Returns:
        dict: mined file_name -> [{"box": the recorded box, "verdict"}], one per recorded
        detection judged.

    Raises:
        VerdictsError: a verdict names an image mining never chose, or a box that is none of
            the detections mining recorded on its image.
    """
    matched = match_mined_images(detections, mined_detections, path, mining_dir)
    return {
        f: _matched_detections(f, judged, mined_detections[f]["boxes"], path, mining_dir)
        for f, judged in matched.items()
    }


def verdicts_document(verdicts, mined_images, detections=None):
    """The verdicts as a verdicts file has them (the review page exports the same shape).

    Args:
        verdicts (dict): file_name -> image verdict.
        mined_images (dict): file_name -> (where it was mined, e.g. "round 1"; its score), for
            the images mining chose.
        detections (dict or None): file_name -> its judged detections ({"box", "verdict"}).

    Returns:
        dict: the file's content: the images of ``verdicts`` in its order, then those with
        judged detections alone ("verdict" null).
    """
    detections = detections or {}
    entries = []
    for file_name in {**verdicts, **detections}:
        mined_in, score = mined_images.get(file_name, (None, None))
        entry = {"file_name": file_name, "verdict": verdicts.get(file_name)}
        if file_name in detections:
            entry["detections"] = detections[file_name]
        entries.append({**entry, "mined_in": mined_in, "score": score})
    return {"format": FORMAT, "version": VERSION, "verdicts": entries}


class ObeyedVerdicts:
    """The verdicts a mining run obeys: which images stay out of training, the boxes that train
    as background, and the report.

    Attributes:
        verdicts (dict): file_name -> image verdict (empty when no verdict was ever given).
        withheld (frozenset): the file_names not to train on: judged to hold an object, or
            unsure.
        negative_boxes (dict): file_name -> its boxes judged false alarms ([x0, y0, x1, y1],
            XYXY_ABS), for the images that train.
    """

    def __init__(self, verdicts=None, false_alarms=None, layout=None):
        """
        Args:
            verdicts (dict or None): file_name -> image verdict.
            false_alarms (dict or None): file_name -> its boxes judged false alarms.
            layout (MiningLayout or None): the run's files, named in the report; None (with
                no verdicts): a run that obeys none.
        """
        self.verdicts = dict(verdicts or {})
        self.withheld = frozenset(f for f, verdict in self.verdicts.items() if verdict in WITHHELD)
        self.negative_boxes = {
            f: boxes for f, boxes in (false_alarms or {}).items() if f not in self.withheld
        }
        self._layout = layout

    def count(self, verdict):
        return sum(v == verdict for v in self.verdicts.values())

    def training_record(self, record):
        """The dataset dict with which a mined image trains: its false-alarm boxes added to
        "negative_boxes" (the mapper and the heads train each as background every time the
        image is seen). ``record`` itself is left as it is: it is the pool dataset's."""
        boxes = self.negative_boxes.get(record["file_name"])
        if not boxes:
            return record
        return {**record, "negative_boxes": [*record.get("negative_boxes", []), *boxes]}

    def false_alarm_boxes(self, file_names):
        """How many boxes judged false alarms the images of ``file_names`` train with."""
        return sum(len(self.negative_boxes.get(f, ())) for f in file_names)

    def report_entry(self):
        """What the report says the verdicts moved; None when no verdict was given."""
        if not self.verdicts:
            return None
        return {
            "applied_file": self._layout.applied_verdicts,
            "images_judged": len(self.verdicts),
            "kept_as_negatives": self.count("negative"),
            "moved_to_annotate": self.count("object"),
            "withheld_as_unsure": self.count("unsure"),
            "to_annotate_file": self._layout.to_annotate,
        }


def _mined_images(layout):
    """file_name -> (where it was mined, the chosen image's entry) for every chosen image."""
    mined = {}
    for choice in read_choices(layout):
        for image in choice["choice"]["images"]:
            where = f"{choice['kind']} {choice['number']}"
            mined.setdefault(image["file_name"], (where, image))
    return mined


def _given_verdicts(path, layout, mined):
    """The verdicts of the file given to this run, checked against what mining chose and
    recorded, and recorded in settings.json."""
    read = read_verdicts_file(path, layout.review_page)
    recorded = {f: image["detections"] for f, (_, image) in mined.items()}
    given = Verdicts(
        images=match_mined_images(read.images, mined, path, layout.root),
        detections=match_mined_detections(read.detections, recorded, path, layout.root),
    )
    counts = {verdict: sum(v == verdict for v in given.images.values()) for verdict in VERDICTS}
    for verdict in DETECTION_VERDICTS:
        judged = [d for ds in given.detections.values() for d in ds if d["verdict"] == verdict]
        counts[f"detections_{verdict}"] = len(judged)
    record_verdicts_file(layout, path, counts)
    logger.info(
        "Obeying the verdicts of %s on %d images (merged into %s).",
        path,
        len(set(given.images) | set(given.detections)),
        layout.applied_verdicts,
    )
    return given


def _merged(earlier, later):
    """``earlier`` with each image judged in ``later`` judged as ``later`` has it."""
    again = set(later.images) | set(later.detections)
    return Verdicts(
        images={**{f: v for f, v in earlier.images.items() if f not in again}, **later.images},
        detections={
            **{f: d for f, d in earlier.detections.items() if f not in again},
            **later.detections,
        },
    )


def _false_alarms(detections):
    """file_name -> its distinct boxes judged false alarms (coincident detections: one box)."""
    false_alarms = {}
    for file_name, judged in detections.items():
        boxes = []
        for d in judged:
            if d["verdict"] == "false_alarm" and d["box"] not in boxes:
                boxes.append(d["box"])
        if boxes:
            false_alarms[file_name] = boxes
    return false_alarms


def _pre_annotations(image, false_alarm_boxes):
    """A chosen image's entry without the detections judged false alarms: what to_annotate.json
    pre-annotates."""
    recorded = image.get("detections")
    if not recorded or not false_alarm_boxes:
        return image
    kept = [
        i
        for i, box in enumerate(recorded["boxes"])
        if not any(_same_box(box, false_alarm) for false_alarm in false_alarm_boxes)
    ]
    detections = {field: [values[i] for i in kept] for field, values in recorded.items()}
    return {**image, "detections": detections}


def _write_obeyed(layout, applied, mined, metadata):
    """verdicts_applied.json, and to_annotate.json of the images judged to hold an object."""
    scores = {f: (where, image["score"]) for f, (where, image) in mined.items()}
    document = verdicts_document(applied.images, scores, applied.detections)
    write_json_atomically(layout.applied_verdicts, document)
    false_alarms = _false_alarms(applied.detections)
    objects = [f for f, verdict in applied.images.items() if verdict == "object"]
    # An image a redone online step did not choose again has no detections on record.
    objects = [
        _pre_annotations(mined[f][1], false_alarms.get(f)) if f in mined else {"file_name": f}
        for f in objects
    ]
    write_json_atomically(layout.to_annotate, to_annotate_coco(objects, metadata, layout.root))


def _obey_on_main_process(cfg, layout, metadata):
    mined = _mined_images(layout)
    applied = Verdicts({}, {})
    if os.path.exists(layout.applied_verdicts):
        applied = read_verdicts_file(layout.applied_verdicts, layout.review_page)
    if cfg.HNM.MINING.VERDICTS:
        applied = _merged(applied, _given_verdicts(cfg.HNM.MINING.VERDICTS, layout, mined))
    obeyed = ObeyedVerdicts(applied.images, _false_alarms(applied.detections), layout)
    if not (applied.images or applied.detections):
        return obeyed
    _write_obeyed(layout, applied, mined, metadata)
    logger.info(
        "Verdicts on %d mined images: %d clean negatives stay in training; %d hold an object "
        "and leave training and the pool (listed in %s for annotation); %d unsure are left out "
        "of training until judged. %d detections judged false alarms train as background "
        "(negative_boxes) with their %d images.",
        len(applied.images),
        obeyed.count("negative"),
        obeyed.count("object"),
        layout.to_annotate,
        obeyed.count("unsure"),
        obeyed.false_alarm_boxes(obeyed.negative_boxes),
        len(obeyed.negative_boxes),
    )
    return obeyed


def obey_verdicts(cfg, layout, metadata):
    """The verdicts this run obeys: those applied before, and HNM.MINING.VERDICTS merged in.

    On the main process: the given file is checked against the images (and detections) mining
    chose, merged into mining/verdicts_applied.json and recorded in settings.json;
    mining/to_annotate.json is rewritten with the images that hold an object. Call it on every
    process, after :func:`hnm_d2.engine.mining_state.start_or_resume`.

    Args:
        cfg (CfgNode): HNM.MINING.VERDICTS, the verdicts file given to this run ("" = none).
        layout (MiningLayout): the run's files.
        metadata (Metadata): the training set's, for to_annotate.json's categories.

    Returns:
        ObeyedVerdicts: the same on every process.

    Raises:
        VerdictsError: the given file cannot be parsed, names an image mining never chose, or
            a box that is none of the detections mining recorded on its image.
    """
    obeyed = _obey_on_main_process(cfg, layout, metadata) if comm.is_main_process() else None
    return main_process_value(obeyed)
