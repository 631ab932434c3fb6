"""benchmarks/run_records.py: a finished run's record keeps what tables read and leaves out
weights; restored, the run is finished again, and a run finished here is never overwritten."""

import tarfile
from pathlib import Path

import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def records():
    return load_script("benchmarks/run_records.py")


def finished_mining_run(output_dir: Path) -> Path:
    """A run folder as accuracy.py leaves a mining run: kept files and left-out ones."""
    run_dir = output_dir / "N_negatives_mined_share0.25_seed0"
    round_dir = run_dir / "mining" / "round_1"
    (round_dir / "inference" / "bench_test").mkdir(parents=True)
    (run_dir / "mining" / "review").mkdir()
    files = {
        "seconds.txt": "1878.0",
        "command.txt": "python -m hnm_d2.mine ...\n",
        "mining/report.json": "{}",
        "mining/round_1/inference/bench_test/coco_instances_results.json": "[]",
        "mining/round_1/model_final.pth": "weights",
        "mining/round_1/events.out.tfevents.1.vm": "events",
        "mining/round_1/metrics.json": "{}",
        "mining/review/crop_0.jpg": "crop",
        "mining/review.html": "<html>",
        "mining/curves.png": "png",
    }
    for name, text in files.items():
        (run_dir / name).write_text(text)
    return run_dir


def test_a_record_keeps_the_evaluation_and_leaves_out_weights_events_and_pages(records, tmp_path):
    run_dir = finished_mining_run(tmp_path / "output" / "txl_pbc_test")
    path = records.save_record(run_dir, tmp_path / "records")
    assert path == tmp_path / "records" / "txl_pbc_test" / f"{run_dir.name}.tar.gz"
    with tarfile.open(path) as tar:
        files = {Path(m.name).relative_to(run_dir.name).as_posix() for m in tar if m.isfile()}
    assert files == {
        "seconds.txt",
        "command.txt",
        "mining/report.json",
        "mining/round_1/inference/bench_test/coco_instances_results.json",
    }


def test_a_restored_run_is_finished_and_a_run_finished_here_is_kept(records, tmp_path):
    run_dir = finished_mining_run(tmp_path / "made" / "txl_pbc_test")
    records.save_record(run_dir, tmp_path / "records")
    fresh = tmp_path / "fresh" / "txl_pbc_test"
    assert records.restore_records(tmp_path / "records", fresh) == [fresh / run_dir.name]
    assert (fresh / run_dir.name / "seconds.txt").read_text() == "1878.0"
    assert (fresh / run_dir.name / "mining" / "report.json").exists()

    (fresh / run_dir.name / "seconds.txt").write_text("1200.0")  # rerun here since
    assert records.restore_records(tmp_path / "records", fresh) == []
    assert (fresh / run_dir.name / "seconds.txt").read_text() == "1200.0"


def test_an_unfinished_run_is_not_recorded(records, tmp_path):
    run_dir = finished_mining_run(tmp_path / "output" / "txl_pbc_test")
    (run_dir / "seconds.txt").unlink()
    with pytest.raises(ValueError, match="no seconds.txt, the run has not finished"):
        records.save_record(run_dir, tmp_path / "records")
    assert not (tmp_path / "records").exists()
