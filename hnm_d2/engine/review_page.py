"""mining/review.html: the page on which a person judges the images mining chose.

One self-contained HTML file (its script, style and data inlined: no server, no network; it opens
from disk) and a folder of small JPEG thumbnails beside it (mining/review/), made here once per
image, so that a pool of thousands of images stays a page that opens at once. It shows every
image chosen in every round (online step) with the detections that got it chosen and their
scores, sortable by score and round; the person sets a verdict per image (a click, or the keys
1 2 3) and, where they wish, per detection (false alarm or object: a click on its label, or the
keys F O X), and exports verdicts.json, which ``hnm_d2.mine --verdicts`` obeys
(:mod:`hnm_d2.engine.verdicts`). The page starts from the verdicts mining obeys already, and
loads an exported file to continue a review. Its zoomed view shows the original image file, by a
path relative to the page (the thumbnail where the page was moved away from the data).

The script and style are package data (review_assets/), inlined when the page is written.
"""

import datetime
import hashlib
import html
import json
import logging
import os
import re
from pathlib import Path
from urllib.request import pathname2url

from tqdm import tqdm

from ..data.identity import image_identity
from ..utils.atomic import atomic_open
from ..utils.images import open_upright, upright_size
from .mining_state import read_choices
from .verdicts import BOX_TOLERANCE, VERDICTS, Verdicts, read_verdicts_file

__all__ = ["write_review_page", "thumbnail"]

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().with_name("review_assets")
THUMBNAIL_PIXELS = 384  # longer side: sharp in a card of the grid, a few tens of kB
JPEG_QUALITY = 85


def thumbnail(file_name, folder):
    """The image's thumbnail in ``folder`` (made when missing or older than the image).

    Args:
        file_name (str): the image file.
        folder (str): where thumbnails go; each is named after the image's real path, so an
            image keeps its thumbnail across rounds and runs of the page.

    Returns:
        tuple: (thumbnail path, (width, height) of the upright image), or None when the image
        cannot be read.
    """
    name = hashlib.sha1(image_identity(file_name).encode()).hexdigest()[:20] + ".jpg"
    path = os.path.join(folder, name)
    try:
        if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(file_name):
            return path, upright_size(file_name)
        image = open_upright(file_name)
    except OSError:
        return None
    size = image.size
    image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    with atomic_open(path, "wb") as f:  # a half-written thumbnail would be reused forever
        image.save(f, format="JPEG", quality=JPEG_QUALITY)
    return path, size


def _url(path, page_dir):
    """The page's relative link to ``path``."""
    return pathname2url(os.path.relpath(os.path.abspath(path), page_dir))


def _detections(detections, class_names):
    def label(c):
        return class_names[c] if class_names and c < len(class_names) else f"class {c}"

    return [
        {"box": [round(v, 1) for v in box], "score": round(score, 4), "label": label(c)}
        for box, score, c in zip(detections["boxes"], detections["scores"], detections["classes"])
    ]


def _page_images(choices, layout):
    """One entry per chosen image, in round (step) order, hardest first; with its thumbnail."""
    images, seen, unreadable = [], set(), []
    listed = [(c, rank, image) for c in choices for rank, image in enumerate(c["choice"]["images"])]
    for choice, rank, image in tqdm(listed, desc="Review page: thumbnails", unit="image"):
        file_name = image["file_name"]
        if file_name in seen:
            continue
        seen.add(file_name)
        made = thumbnail(file_name, layout.review_dir)
        if made is None:
            unreadable.append(file_name)
        images.append(
            {
                "key": file_name,
                "name": os.path.basename(file_name),
                "kind": choice["kind"],
                "number": choice["number"],
                "iteration": choice["choice"].get("iteration"),
                "rank": rank + 1,
                # A random control's draw is ranked by score too, but is not the hardest.
                "drawn_at_random": choice["choice"].get("selection") == "random",
                "score": image["score"],
                "dataset": image.get("dataset"),
                "thumb": _url(made[0], layout.root) if made else None,
                "original": _url(file_name, layout.root),
                "size": list(made[1]) if made else None,
                "detections": _detections(
                    image["detections"], choice["choice"].get("thing_classes")
                ),
            }
        )
    if unreadable:
        logger.warning(
            "Review page: %d mined images cannot be read and are shown without a picture, "
            "e.g. %s: restore the files to see them.",
            len(unreadable),
            unreadable[0],
        )
    return images


def _inline_json(data):
    # Inside <script>, "</script>" in a file name would end the element: escape every "<".
    return json.dumps(data).replace("<", "\\u003c")


def _render(fields):
    template = (ASSETS / "review.html").read_text()
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m.group(1)], template)


def write_review_page(layout):
    """Write (or refresh) mining/review.html and its thumbnails; main process only.

    Args:
        layout (MiningLayout): the run's files; its choices (round_K_selection.json or
            step_K.json) and the verdicts it obeys (verdicts_applied.json) are read.

    Returns:
        int: the images on the page; 0, and no page, before mining chose any.
    """
    choices = read_choices(layout)
    if not choices:
        return 0
    verdicts = Verdicts({}, {})
    if os.path.exists(layout.applied_verdicts):
        verdicts = read_verdicts_file(layout.applied_verdicts, layout.review_page)
    output_dir = os.path.dirname(os.path.abspath(layout.root))
    data = {
        "run": output_dir,
        "generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        # One class: a box's score says it all; more: its class name too.
        "show_classes": any(len(c["choice"].get("thing_classes") or []) > 1 for c in choices),
        "verdict_names": list(VERDICTS),
        "verdicts": verdicts.images,
        "detection_verdicts": verdicts.detections,
        "box_tolerance": BOX_TOLERANCE,
        "images": _page_images(choices, layout),
    }
    page = _render(
        {
            "title": html.escape(f"Mined images: {os.path.basename(output_dir)}"),
            "style": (ASSETS / "review.css").read_text(),
            "script": (ASSETS / "review.js").read_text(),
            "data": _inline_json(data),
        }
    )
    with atomic_open(layout.review_page, "w") as f:
        f.write(page)
    return len(data["images"])
