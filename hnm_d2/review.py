"""``python -m hnm_d2.review OUTPUT_DIR`` (console script ``hnm-review``): the review page of the
images a mining run chose.

    python -m hnm_d2.review output/mine

writes OUTPUT_DIR/mining/review.html and its thumbnails (mining/review/): every image mined in
every round (or online step) with the detections that got it chosen. Open the page in a browser
(from disk; it needs no server), judge the images (clean negative / holds an object / unsure)
and, where you wish, their detections (false alarm / object), export verdicts.json, and give it
to the next round: ``python -m hnm_d2.mine ... --verdicts verdicts.json``. Mining writes the
page itself after every round and online step; this command rebuilds it, e.g. after the images
moved or for a run of an earlier version.
"""

import argparse
import logging
import os
import sys

from .engine.mining_state import MiningLayout, read_choices
from .engine.review_page import write_review_page

__all__ = ["main"]

logger = logging.getLogger("hnm_d2.review")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m hnm_d2.review",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the OUTPUT_DIR of a mining run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    layout = MiningLayout(args.output_dir)
    if not read_choices(layout):
        parser.error(
            f"{layout.root} holds no mined images (no round_K_selection.json or step_K.json): "
            "give the OUTPUT_DIR of a python -m hnm_d2.mine run that has mined a round or a step."
        )
    count = write_review_page(layout)
    logger.info(
        "Wrote %s (%d mined images): open it in a browser.",
        os.path.abspath(layout.review_page),
        count,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
