"""A person's verdicts on the images mining chose, and how a mining run obeys them.

Mining chooses the pool images the model fires on most; on real data many of them hold an
object nobody annotated, and mining would teach them as background. On the review page
(:mod:`hnm_d2.engine.review_page`) a person judges each chosen image:

    negative   a clean negative: it stays a training negative
    object     it holds an object: it leaves the training negatives (and the pool) and goes to
               mining/to_annotate.json, its detections as pre-annotations
    unsure     it is left out of training until judged

The verdicts file, as the page exports it (only "file_name" and "verdict" are read; the rest is
for a person reading the file):

    {"format": "hnm_d2 verdicts", "version": 1,
     "verdicts": [{"file_name": "/data/pool/0042.png", "verdict": "object",
                   "mined_in": "round 1", "score": 0.93}, ...]}

An image is named by its file, compared as its real path (:mod:`hnm_d2.data.identity`). A run
given a verdicts file (``--verdicts``, HNM.MINING.VERDICTS) merges it into
mining/verdicts_applied.json, a later verdict on an image replacing an earlier one; every later
resume obeys that file too, so an image judged to hold an object never comes back silently, and
settings.json lists each file given (:func:`hnm_d2.engine.mining_state.record_verdicts_file`).
"""

import json
import logging
import os

from detectron2.utils import comm

from ..data.identity import image_identity
from ..utils.atomic import write_json_atomically
from .mining_state import main_process_value, read_choices, record_verdicts_file
from .to_annotate import to_annotate_coco

__all__ = [
    "VERDICTS",
    "WITHHELD",
    "VerdictsError",
    "read_verdicts",
    "match_mined_images",
    "verdicts_document",
    "ObeyedVerdicts",
    "obey_verdicts",
]

logger = logging.getLogger(__name__)

VERDICTS = ("negative", "object", "unsure")
WITHHELD = frozenset({"object", "unsure"})  # kept out of training
FORMAT, VERSION = "hnm_d2 verdicts", 1


class VerdictsError(ValueError):
    """A verdicts file that cannot be obeyed; the message names the file, the image and the fix."""


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


def read_verdicts(path, page=None):
    """The verdicts of a verdicts file.

    Args:
        path (str): the file.
        page (str or None): the review page to name in the fix of an error.

    Returns:
        dict: file_name (as the file spells it) -> verdict, in the file's order.

    Raises:
        VerdictsError: the file cannot be read or parsed, has no "verdicts" list, an entry lacks
            "file_name" or has a verdict other than VERDICTS, or an image is judged twice
            differently; the message names the file, the entry, the image and the fix.
    """
    document = _load_json(path, page)
    entries = document.get("verdicts") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise VerdictsError(
            f'Verdicts file {path} has no list "verdicts": a verdicts file is '
            '{"verdicts": [{"file_name": ..., "verdict": "negative" | "object" | "unsure"}, ...]}'
            f"; {_judge_again(page)}."
        )
    verdicts, first_entry = {}, {}
    for index, entry in enumerate(entries):
        file_name = entry.get("file_name") if isinstance(entry, dict) else None
        if not isinstance(file_name, str) or not file_name:
            raise VerdictsError(
                f"Verdicts file {path}, entry {index} ({entry!r}): field 'file_name' is missing "
                f"or not a path. Fix the entry, or {_judge_again(page)}."
            )
        verdict = entry.get("verdict")
        if verdict not in VERDICTS:
            raise VerdictsError(
                f"Verdicts file {path}, entry {index} (image {file_name}): field 'verdict' is "
                f"{verdict!r}; allowed are 'negative' (a clean negative), 'object' (holds an "
                f"object) and 'unsure'. Fix the entry, or {_judge_again(page)}."
            )
        identity = image_identity(file_name)
        earlier = first_entry.setdefault(identity, (index, file_name))
        if earlier[0] != index and verdicts[earlier[1]] != verdict:
            raise VerdictsError(
                f"Verdicts file {path}, entries {earlier[0]} and {index}: image {file_name} is "
                f"judged '{verdicts[earlier[1]]}' and '{verdict}'. Keep the one you mean."
            )
        verdicts[earlier[1]] = verdict
    return verdicts


def match_mined_images(verdicts, mined_file_names, path, mining_dir):
    """The verdicts on the images mining chose, each named as mining named it.

    Args:
        verdicts (dict): :func:`read_verdicts` output.
        mined_file_names (Iterable[str]): the file_name of every image mining chose.
        path (str): the verdicts file, for the message.
        mining_dir (str): OUTPUT_DIR/mining of the run, for the message.

    Returns:
        dict: mined file_name -> verdict.

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
            f"this run's review page ({os.path.join(mining_dir, 'review.html')}); verdicts on "
            "another OUTPUT_DIR's images do not apply here."
        )
    return {mined[image_identity(f)]: verdict for f, verdict in verdicts.items()}


def verdicts_document(verdicts, mined_images):
    """The verdicts as a verdicts file has them (the review page exports the same shape).

    Args:
        verdicts (dict): file_name -> verdict.
        mined_images (dict): file_name -> (where it was mined, e.g. "round 1"; its score), for
            the images mining chose.

    Returns:
        dict: the file's content, the verdicts in the order of ``verdicts``.
    """
    entries = []
    for file_name, verdict in verdicts.items():
        mined_in, score = mined_images.get(file_name, (None, None))
        entry = {"file_name": file_name, "verdict": verdict, "mined_in": mined_in, "score": score}
        entries.append(entry)
    return {"format": FORMAT, "version": VERSION, "verdicts": entries}


class ObeyedVerdicts:
    """The verdicts a mining run obeys: which images stay out of training, and the report.

    Attributes:
        verdicts (dict): file_name -> verdict (empty when no verdict was ever given).
        withheld (frozenset): the file_names not to train on: judged to hold an object, or
            unsure.
    """

    def __init__(self, verdicts, layout):
        self.verdicts = dict(verdicts)
        self.withheld = frozenset(f for f, verdict in self.verdicts.items() if verdict in WITHHELD)
        self._applied_file, self._to_annotate = layout.applied_verdicts, layout.to_annotate

    def count(self, verdict):
        return sum(v == verdict for v in self.verdicts.values())

    def report_entry(self):
        """What the report says the verdicts moved; None when no verdict was given."""
        if not self.verdicts:
            return None
        return {
            "applied_file": self._applied_file,
            "images_judged": len(self.verdicts),
            "kept_as_negatives": self.count("negative"),
            "moved_to_annotate": self.count("object"),
            "withheld_as_unsure": self.count("unsure"),
            "to_annotate_file": self._to_annotate,
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
    """The verdicts of the file given to this run, checked and recorded in settings.json."""
    given = match_mined_images(read_verdicts(path, layout.review_page), mined, path, layout.root)
    counts = {verdict: sum(v == verdict for v in given.values()) for verdict in VERDICTS}
    record_verdicts_file(layout, path, counts)
    logger.info(
        "Obeying the %d verdicts of %s (merged into %s).", len(given), path, layout.applied_verdicts
    )
    return given


def _write_obeyed(layout, applied, mined, metadata):
    """verdicts_applied.json, and to_annotate.json of the images judged to hold an object."""
    scores = {f: (where, image["score"]) for f, (where, image) in mined.items()}
    write_json_atomically(layout.applied_verdicts, verdicts_document(applied, scores))
    # An image a redone online step did not choose again has no detections on record.
    objects = [f for f, verdict in applied.items() if verdict == "object"]
    objects = [mined[f][1] if f in mined else {"file_name": f} for f in objects]
    write_json_atomically(layout.to_annotate, to_annotate_coco(objects, metadata, layout.root))


def _obey_on_main_process(cfg, layout, metadata):
    mined = _mined_images(layout)
    applied = {}
    if os.path.exists(layout.applied_verdicts):
        applied = read_verdicts(layout.applied_verdicts, layout.review_page)
    if cfg.HNM.MINING.VERDICTS:
        applied = {**applied, **_given_verdicts(cfg.HNM.MINING.VERDICTS, layout, mined)}
    obeyed = ObeyedVerdicts(applied, layout)
    if not applied:
        return obeyed
    _write_obeyed(layout, applied, mined, metadata)
    logger.info(
        "Verdicts on %d mined images: %d clean negatives stay in training; %d hold an object "
        "and leave training and the pool (listed in %s for annotation); %d unsure are left out "
        "of training until judged.",
        len(applied),
        obeyed.count("negative"),
        obeyed.count("object"),
        layout.to_annotate,
        obeyed.count("unsure"),
    )
    return obeyed


def obey_verdicts(cfg, layout, metadata):
    """The verdicts this run obeys: those applied before, and HNM.MINING.VERDICTS merged in.

    On the main process: the given file is checked against the images mining chose, merged
    into mining/verdicts_applied.json and recorded in settings.json; mining/to_annotate.json is
    rewritten with the images that hold an object. Call it on every process, after
    :func:`hnm_d2.engine.mining_state.start_or_resume`.

    Args:
        cfg (CfgNode): HNM.MINING.VERDICTS, the verdicts file given to this run ("" = none).
        layout (MiningLayout): the run's files.
        metadata (Metadata): the training set's, for to_annotate.json's categories.

    Returns:
        ObeyedVerdicts: the same on every process.

    Raises:
        VerdictsError: the given file cannot be parsed, or names an image mining never chose.
    """
    obeyed = _obey_on_main_process(cfg, layout, metadata) if comm.is_main_process() else None
    return main_process_value(obeyed)
