"""Checkpoints: written atomically (a kill while saving never leaves a truncated file behind the
final name), and a truncated or foreign file fails with a message naming it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

from hnm_d2.engine import AtomicDetectionCheckpointer, CheckpointError


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def test_save_then_load_round_trip(tmp_path):
    model = small_model()
    AtomicDetectionCheckpointer(model, str(tmp_path)).save("model_final", iteration=7)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]

    fresh = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    extra = AtomicDetectionCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 7
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = small_model()
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final", iteration=1)
    before = (tmp_path / "model_final.pth").read_bytes()

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_final", iteration=2)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


SAVE_FOREVER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from hnm_d2.engine import AtomicDetectionCheckpointer
    model = nn.Linear(2048, 2048)  # 16 MB per save: a kill lands mid-write often
    checkpointer = AtomicDetectionCheckpointer(model, sys.argv[1])
    i = 0
    while True:
        checkpointer.save("model_final", iteration=i)
        print(i, flush=True)
        i += 1
    """)


def test_sigkill_while_saving_leaves_a_loadable_checkpoint(tmp_path):
    for delay in (0.8, 1.3, 1.9):
        out = tmp_path / f"run_{delay}"
        out.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVE_FOREVER, str(out)], stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()  # at least one complete save
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        extra = AtomicDetectionCheckpointer(nn.Linear(2048, 2048), str(out)).resume_or_load(
            "", resume=True
        )
        assert extra["iteration"] >= 0


def test_truncated_checkpoint_fails_naming_the_file(tmp_path):
    path = tmp_path / "model_final.pth"
    AtomicDetectionCheckpointer(small_model(), str(tmp_path)).save("model_final")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model_final.pth.*truncated"):
        AtomicDetectionCheckpointer(small_model()).load(str(path))


def test_foreign_checkpoint_fails_naming_the_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match="other.pth gave the model no parameter"):
        AtomicDetectionCheckpointer(small_model()).load(str(path))


def test_not_a_checkpoint_fails_naming_the_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="notes.pth"):
        AtomicDetectionCheckpointer(small_model()).load(str(path))


def test_resume_removes_files_left_by_an_interrupted_save(tmp_path):
    AtomicDetectionCheckpointer(small_model(), str(tmp_path)).save("model_final", iteration=3)
    leftover = tmp_path / ".tmp-abc123.part"
    leftover.write_bytes(b"half a checkpoint")
    extra = AtomicDetectionCheckpointer(small_model(), str(tmp_path)).resume_or_load(
        "", resume=True
    )
    assert extra["iteration"] == 3 and not leftover.exists()
