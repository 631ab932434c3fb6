"""Helpers shared by the tests that run the project's commands and scripts, and the marks of
tests that need what detectron2 0.6 lacks."""

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from hnm_d2.compat import launch_runs_cpu_processes

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "quick_schedules" / "hnm_instant_test.yaml")


def quick_mine_argv(synthetic_root, output_dir, *flags):
    """``python -m hnm_d2.mine``'s arguments for a run on the quick schedule and the synthetic
    data, mining synthetic_pool; SCORE_THRESH_TEST 0 makes the barely trained model's
    detections on the pool images count."""
    return (
        ["--config-file", QUICK, "--synthetic", str(synthetic_root)]
        + ["--negative-pool", "synthetic_pool", *map(str, flags)]
        + ["OUTPUT_DIR", str(output_dir), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    )

# Features of detectron2 after 0.6: on 0.6 (`make test-upstream`) their tests are skipped,
# saying why; on any later detectron2 they run.
needs_cpu_launch = pytest.mark.skipif(
    not launch_runs_cpu_processes(),
    reason="this detectron2's launch starts GPU processes only (0.6): 2 CPU processes need a "
    "later one",
)
needs_sigmoid_ce = pytest.mark.skipif(
    "USE_SIGMOID_CE" not in get_cfg().MODEL.ROI_BOX_HEAD,
    reason="this detectron2 has no MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE (0.6)",
)


def load_script(path):
    """A script of the repository (``path`` relative to its root) as a module, for testing its
    parts: the scripts are in no package."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_python(args, timeout, env=None):
    """Run ``python *args`` in the repo root and return its output (stdout and stderr).

    The process gets its own process group: on timeout the whole group is killed (the workers
    that detectron2's launch spawned included) and the test fails. A non-zero exit fails the
    test with the end of the output.

    Args:
        args: the command line after ``python`` (paths and numbers are converted to str).
        timeout (float): seconds before the run is killed.
        env (dict): variables added to the environment (OMP_NUM_THREADS is 1 unless given).
    """
    cmd = [sys.executable, *map(str, args)]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} ran past {timeout} s:\n{output[-6000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{output[-6000:]}"
    return output
