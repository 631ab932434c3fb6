"""results.json is strict JSON, and the summary line names the test set it is about."""

import json
import logging

import numpy as np
import pytest

from hnm_d2.engine.launcher import log_summary, save_results
from hnm_d2.utils.atomic import write_json_atomically


def strict_loads(text):
    """json.loads that rejects NaN and +-Infinity, as JavaScript's JSON.parse and jq do."""

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def test_non_finite_floats_are_written_as_null_throughout(tmp_path):
    path = tmp_path / "out.json"
    data = {
        "bbox": {"AP": 50.0, "APs": float("nan"), "APm": float("inf")},
        "list": [1.0, float("-inf"), (np.float32("nan"), np.float64(0.25))],
        "negatives": {"num_images": np.int64(0), "fa_per_image@0.5": np.float64("nan")},
    }

    write_json_atomically(path, data)

    assert strict_loads(path.read_text()) == {
        "bbox": {"AP": 50.0, "APs": None, "APm": None},
        "list": [1.0, None, [None, 0.25]],
        "negatives": {"num_images": 0, "fa_per_image@0.5": None},
    }


def test_unserializable_value_raises_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomically(path, {"round": 0})

    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomically(path, {"round": object()})

    assert strict_loads(path.read_text()) == {"round": 0}


def test_saved_results_parse_strictly(tmp_path):
    results = {"bbox_positives": {"AP": 71.5, "APl": float("nan")}, "negatives": {}}

    path = save_results(results, str(tmp_path))

    assert strict_loads((tmp_path / "results.json").read_text()) == {
        "bbox_positives": {"AP": 71.5, "APl": None},
        "negatives": {},
    }
    assert path == str(tmp_path / "results.json")


def _results(ap):
    return {
        "bbox": {"AP": ap - 5},
        "bbox_positives": {"AP": ap, "AP50": ap + 10},
        "negatives": {
            "fa_per_image@0.5": 0.25,
            "images_with_fa@0.5": 0.2,
            "fa_per_image@recall0.9": float("nan"),  # recall 0.9 never reached
            "log_avg_miss_rate": 0.3125,
        },
    }


def _summary_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Summary [")]


def test_summary_of_a_lone_test_set_names_it(caplog):
    # DefaultTrainer.test returns a lone test set's results unwrapped.
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        log_summary(_results(60.0), ("bccd_test",))

    assert _summary_lines(caplog) == [
        "Summary [bccd_test]: AP 60.0 / AP50 70.0 on positive images; false alarms per "
        "negative image at recall 0.9: n/a, at score 0.5: 0.250; MR^-2 0.312; negative images "
        "with any alarm at 0.5: 20%"
    ]


def test_summary_of_several_test_sets_names_each(caplog):
    results = {"set_a": _results(60.0), "set_b": _results(40.0)}
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        log_summary(results, ("set_a", "set_b"))

    lines = _summary_lines(caplog)
    assert [line.split("]")[0] for line in lines] == ["Summary [set_a", "Summary [set_b"]
    assert "AP 40.0 / AP50 50.0" in lines[1]


def test_summary_of_results_keyed_by_test_set_needs_no_names(caplog):
    # The mining loop keeps even a lone test set's results keyed by its name.
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        log_summary({"synthetic_test": _results(60.0)})

    assert [line.split("]")[0] for line in _summary_lines(caplog)] == ["Summary [synthetic_test"]


def test_summary_without_results_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        log_summary(None, ("bccd_test",))

    assert _summary_lines(caplog) == []
