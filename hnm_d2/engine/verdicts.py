"""A person's verdicts on the images mining chose: the verdicts file.

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

An image is named by its file, compared as its real path (:mod:`hnm_d2.data.identity`).
"""

import json

from ..data.identity import image_identity

__all__ = [
    "VERDICTS",
    "VerdictsError",
    "read_verdicts",
    "verdicts_document",
]

VERDICTS = ("negative", "object", "unsure")
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
