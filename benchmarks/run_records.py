"""Records of finished benchmark runs: what a table needs, kept across sittings without weights.

A run of benchmarks/accuracy.py leaves its folder under output/, which a fresh checkout does not
have. Its record is that folder as a .tar.gz without what only training needs (weights, event
files, the training log's metrics, plots): its time (seconds.txt), command, configs, reports
and evaluations (results.json, the detections), about 0.2-0.4 MB. Restored into the output
folder, a run is finished again: accuracy.py reuses it, and negative_audit.py and
paired_bootstrap.py read its detections, so a table, an audit or a bootstrap can be completed
sittings later. accuracy.py does both with ``--records DIR``; for a run made by hand (a
mining run retrained with a person's verdicts):

    .venv/bin/python benchmarks/run_records.py save RUN_DIR... --records benchmarks/records
    .venv/bin/python benchmarks/run_records.py restore --records benchmarks/records \
        --output output/bench_bccd/txl_pbc_test
"""

import argparse
import os
import tarfile
from pathlib import Path

# What a table, an audit and a bootstrap never read: kept out of the records.
_LEFT_OUT_SUFFIXES = (".pth", ".png", ".lock", ".html")
_LEFT_OUT_PREFIXES = ("events.out.tfevents",)
# (log.txt: detectron2's copy of what benchmark.log, the command's output, holds.)
_LEFT_OUT_NAMES = {"metrics.json", "review", "log.txt"}


def record_path(records_dir: Path, run_dir: Path) -> Path:
    """The record of ``run_dir``: named by the run's folder, under the folder of its data."""
    return records_dir / run_dir.parent.name / f"{run_dir.name}.tar.gz"


def _kept(member: tarfile.TarInfo):
    name = os.path.basename(member.name)
    left_out = (
        name.endswith(_LEFT_OUT_SUFFIXES)
        or name.startswith(_LEFT_OUT_PREFIXES)
        or name in _LEFT_OUT_NAMES
    )
    return None if left_out else member


def save_record(run_dir: Path, records_dir: Path) -> Path:
    """Write the record of a finished run (its folder holds seconds.txt); returns its path."""
    if not (run_dir / "seconds.txt").exists():
        raise ValueError(f"{run_dir}: no seconds.txt, the run has not finished; nothing to record")
    path = record_path(records_dir, run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # an interrupted write leaves no record
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(run_dir, arcname=run_dir.name, filter=_kept)
    partial.replace(path)
    return path


def restore_records(records_dir: Path, output_dir: Path) -> list:
    """Unpack into ``output_dir`` the records of its data whose run is not finished there (no
    seconds.txt); a run finished here is never overwritten. Returns the run folders restored."""
    restored = []
    for path in sorted((records_dir / output_dir.name).glob("*.tar.gz")):
        run_dir = output_dir / path.name[: -len(".tar.gz")]
        if (run_dir / "seconds.txt").exists():
            continue
        with tarfile.open(path) as tar:
            tar.extractall(output_dir, filter="data")  # no path outside output_dir
        restored.append(run_dir)
    return restored


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["save", "restore"])
    parser.add_argument("run_dirs", nargs="*", type=Path, help="with save: finished run folders")
    parser.add_argument("--records", type=Path, required=True, help="the records' folder")
    parser.add_argument("--output", type=Path, help="with restore: a data's output folder")
    args = parser.parse_args()
    if args.action == "save":
        for run_dir in args.run_dirs:
            print(save_record(run_dir.resolve(), args.records))
    elif args.output is None:
        parser.error("restore needs --output, the data's output folder (e.g. .../txl_pbc_test)")
    else:
        for run_dir in restore_records(args.records, args.output):
            print(run_dir)


if __name__ == "__main__":
    main()
