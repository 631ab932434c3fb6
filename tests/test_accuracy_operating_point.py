"""benchmarks/accuracy.py's operating-point table: the recall that a fixed score finds, read
from a run's FROC curve, beside where the recall-0.9 threshold falls."""

import sys

import numpy as np
import pytest
from helpers import REPO, load_script

from hnm_d2.evaluation.froc import save_curve
from hnm_d2.evaluation.operating_point import DetectionCurve

sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its neighbours
accuracy = load_script("benchmarks/accuracy.py")


@pytest.fixture
def froc_file(tmp_path):
    """Four objects found one by one as the threshold falls from 0.9 to 0.2."""
    curve = DetectionCurve(
        thresholds=np.array([0.9, 0.7, 0.5, 0.2]),
        recall=np.array([0.25, 0.5, 0.75, 1.0]),
        fa_per_negative_image=np.array([0.0, 0.0, 0.5, 2.0]),
        fp_per_image=np.array([0.0, 0.0, 0.25, 1.0]),
        num_objects=4,
        num_images=4,
        num_negative_images=2,
    )
    path = tmp_path / "froc.json"
    save_curve(curve, str(path))
    return path


@pytest.mark.parametrize(
    "score, recall",
    [(0.5, 0.75), (0.6, 0.5), (0.2, 1.0), (0.05, 1.0), (0.95, 0.0)],
)
def test_the_recall_at_a_score_counts_the_detections_scored_at_least_that(froc_file, score, recall):
    assert accuracy.recall_at_score(froc_file, score) == recall


def test_the_operating_point_table_reads_each_column_from_its_section():
    runs = [
        {
            "seed": seed,
            "seconds": 100.0,
            "results": {
                "negatives": {
                    "score@recall0.9": score,
                    "fa_per_image@0.5": 0.1,
                    "fa_per_image@recall0.9": 0.2,
                },
                "operating_point": {"recall@0.5": 0.9},
            },
        }
        for seed, score in ((0, 0.8), (1, 0.6))
    ]
    table = accuracy.markdown_table({"stock": runs}, accuracy.OPERATING_POINT)
    assert table.splitlines()[2] == (
        "| stock | 0.700 ± 0.141 | 0.900 ± 0.000 | 0.100 ± 0.000 | 0.200 ± 0.000 | 100 ± 0 |"
    )
