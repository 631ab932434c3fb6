"""The launcher end to end: every YAML loads, a quick schedule trains, checkpoints and resumes,
and ``--num-gpus 2`` runs two CPU processes through detectron2's launch."""

import json
from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from helpers import needs_cpu_launch, run_python

import hnm_d2
from hnm_d2.config import validate_hnm_config
from hnm_d2.modeling import HNMROIHeads

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
QUICK = "configs/quick_schedules/hnm_instant_test.yaml"
QUICK_ALL = "configs/quick_schedules/hnm_all_mechanisms_instant_test.yaml"


def load_config(path):
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(str(path))
    return cfg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_yaml_loads_and_builds_a_model(path):
    cfg = load_config(path)
    validate_hnm_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE == "HNMRCNN"
    assert type(model.roi_heads).__name__ == cfg.MODEL.ROI_HEADS.NAME
    assert isinstance(model.roi_heads, HNMROIHeads)
    assert type(model.proposal_generator).__name__ == "HNMRPN"


def run_train_net(*args, timeout=600):
    """Output (stdout and stderr) of ``python train_net.py *args``."""
    return run_python(["train_net.py", *args], timeout)


def last_logged_iteration(output_dir):
    lines = (Path(output_dir) / "metrics.json").read_text().splitlines()
    return max(json.loads(line)["iteration"] for line in lines if '"total_loss"' in line)


def test_quick_schedule_trains_checkpoints_evaluates_and_resumes(tmp_path, synthetic_root):
    out = tmp_path / "out"
    data = ["--config-file", QUICK, "--synthetic", synthetic_root]
    first = run_train_net(*data, "OUTPUT_DIR", out)
    assert (out / "model_0000001.pth").exists() and (out / "model_final.pth").exists()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert "false alarms per negative image" in first
    assert last_logged_iteration(out) == 3
    assert "fa_per_image@0.5" in json.loads((out / "results.json").read_text())["negatives"]

    # Resume: continues from the saved iteration (4) instead of starting again at 0.
    second = run_train_net(*data, "--resume", "OUTPUT_DIR", out, "SOLVER.MAX_ITER", 6)
    assert "Starting training from iteration 4" in second
    assert last_logged_iteration(out) == 5
    assert torch.load(out / "model_final.pth", map_location="cpu")["iteration"] == 5


@pytest.mark.parametrize(
    "config, logged",
    [
        ("hnm_mask_all_mechanisms_instant_test.yaml", ["loss_mask", "hnm/ohem_kept_neg"]),
        (
            "hnm_cascade_all_mechanisms_instant_test.yaml",
            ["loss_cls_stage2", "stage2/hnm/ohem_kept_neg", "hnm/rpn_ohem_neg"],
        ),
    ],
)
def test_mask_and_cascade_quick_schedules_train_and_evaluate(
    config, logged, tmp_path, synthetic_root
):
    out = tmp_path / "out"
    data = ["--config-file", f"configs/quick_schedules/{config}", "--synthetic", synthetic_root]
    run_train_net(*data, "OUTPUT_DIR", out)
    metrics = (out / "metrics.json").read_text()
    assert all(f'"{name}"' in metrics for name in logged)
    results = json.loads((out / "results.json").read_text())
    assert "AP50" in results["bbox"] and "fa_per_image@0.5" in results["negatives"]
    if "mask" in config:
        assert "AP" in results["segm"]


def test_eval_only_reports_false_alarms(tmp_path, synthetic_root):
    out = tmp_path / "out"
    data = ["--config-file", QUICK, "--synthetic", synthetic_root]
    run_train_net(*data, "OUTPUT_DIR", out)
    weights = ["MODEL.WEIGHTS", out / "model_final.pth"]
    log = run_train_net(*data, "--eval-only", *weights, "OUTPUT_DIR", tmp_path / "eval")
    assert "fa_per_image@0.5" in log and "Summary [" in log


@needs_cpu_launch
def test_two_cpu_processes_train_with_every_mechanism(tmp_path, synthetic_root):
    out = tmp_path / "out"
    data = ["--config-file", QUICK_ALL, "--synthetic", synthetic_root, "--num-gpus", 2]
    run_train_net(*data, "OUTPUT_DIR", out, "TEST.EVAL_PERIOD", 0)
    assert (out / "model_final.pth").exists()
    assert last_logged_iteration(out) == 3


def test_buffer_comes_back_on_resume_but_not_with_model_weights(tmp_path, synthetic_datasets):
    from hnm_d2.engine import HNMTrainer

    def trainer(output_dir, weights=""):
        cfg = load_config(REPO / QUICK_ALL)
        cfg.merge_from_list(["OUTPUT_DIR", str(output_dir), "MODEL.WEIGHTS", weights])
        return HNMTrainer(cfg)

    def buffer_of(t):
        return t.checkpointer.model.roi_heads.hard_negative_buffer

    first = trainer(tmp_path / "a")
    buffer_of(first).record_visit(7, torch.tensor([[1.0, 2.0, 30.0, 40.0]]), torch.tensor([0.9]), 0)
    first.iter = 3  # as if it had trained 4 iterations
    first.checkpointer.save("model_final")
    saved = buffer_of(first).table()

    resumed = trainer(tmp_path / "a")
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4 and torch.equal(buffer_of(resumed).table(), saved)

    fine_tuned = trainer(tmp_path / "b", weights=str(tmp_path / "a" / "model_final.pth"))
    fine_tuned.resume_or_load(resume=False)
    assert fine_tuned.start_iter == 0 and buffer_of(fine_tuned).num_entries == 0
    weights = fine_tuned.checkpointer.model.backbone.state_dict()
    for key, value in first.checkpointer.model.backbone.state_dict().items():
        assert torch.equal(weights[key], value), key
