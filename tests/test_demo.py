"""``make demo``'s terminal: two runs in one process log each line once, to the demo's log file
(and to the terminal only with --verbose); the line under the table reads the FROC curves."""

import logging

import numpy as np
import pytest

from hnm_d2.demo import LIBRARY_LOGGERS, froc_reading, prepare_run, route_library_logs
from hnm_d2.evaluation.operating_point import detection_curve


@pytest.fixture
def bare_loggers():
    """The libraries' loggers without the handlers earlier tests gave them, restored after."""
    saved = {}
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        saved[name] = (library.handlers[:], library.propagate, library.level)
        library.handlers = []
    yield
    for name, (handlers, propagate, level) in saved.items():
        library = logging.getLogger(name)
        library.handlers, library.propagate = handlers, propagate
        library.setLevel(level)


def two_runs_then_log(tmp_path, verbose):
    """What the demo does for its two models, then a line from detectron2 and from hnm_d2."""
    log_file = tmp_path / "log.txt"
    for run in ("stock", "hnm_d2"):
        route_library_logs(str(log_file), verbose)
        prepare_run([], str(tmp_path / run))
    logging.getLogger("detectron2.engine.train_loop").info("a detectron2 line")
    logging.getLogger("hnm_d2.engine.trainer").info("an hnm_d2 line")
    return log_file.read_text()


@pytest.mark.parametrize("verbose", [False, True])
def test_two_runs_log_each_line_once(tmp_path, capsys, bare_loggers, verbose):
    logged = two_runs_then_log(tmp_path, verbose)
    printed = capsys.readouterr().out
    for line in ("a detectron2 line", "an hnm_d2 line"):
        assert logged.count(line) == 1, line
        assert printed.count(line) == (1 if verbose else 0), line
    # Each run keeps its config; the log file is the demo's, not a run's.
    assert (tmp_path / "stock" / "config.yaml").exists()
    assert not (tmp_path / "stock" / "log.txt").exists()


def curve(hit_scores, alarm_scores, objects=2):
    """One positive image with ``objects`` objects, found at ``hit_scores``; one negative image
    with alarms at ``alarm_scores``."""
    scores = np.array(hit_scores)
    return detection_curve([scores], [np.ones(len(scores))], [np.array(alarm_scores)], objects)


def test_the_froc_line_says_where_the_candidate_has_fewer_alarms(monkeypatch):
    monkeypatch.setattr("hnm_d2.demo.FROC_RECALLS", (0.5, 1.0))
    # Recall 0.5 at scores 0.9 (baseline: 1 alarm above, candidate: none); recall 1 at 0.6
    # (baseline: 1 alarm, candidate: 2).
    baseline = curve([0.9, 0.6], [0.95])
    candidate = curve([0.9, 0.6], [0.8, 0.7])
    line = froc_reading({"stock detectron2": baseline, "hnm_d2": candidate})
    assert line.endswith("fewer at recall 0.5; more at recall 1.")
    line = froc_reading({"stock detectron2": baseline, "hnm_d2": curve([0.9], [])})
    assert line.endswith("fewer at recall 0.5; not reached by both at recall 1.")
