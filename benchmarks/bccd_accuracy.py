#!/usr/bin/env python
"""Accuracy benchmark on real data: BCCD, class Platelets, every setting side by side.

Trains the small CPU config from scratch with the same iteration budget per setting (for
image-level mining, the rounds together use the same total) for several seeds, evaluates on the
official test split, and prints one table: AP/AP50 on the positive test images, AP over the
whole test set (negatives included), false alarms per negative test image at score 0.5, the
share of negative test images with any alarm at 0.5, and the run time — mean and spread
(sample standard deviation) over seeds.

Training uses the official trainval split (train + val), evaluation the official test split.
Nothing is tuned: every setting uses the values of its YAML in configs/. A run whose output
directory already holds its time (seconds.txt) is reused, so an interrupted benchmark resumes.

    .venv/bin/python benchmarks/bccd_accuracy.py --bccd-root ../shared/data/bccd \
        --iters 240 --seeds 0 1 2 --jobs 2 --output output/bench_bccd
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STOCK_ARCH = [
    "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
    "MODEL.PROPOSAL_GENERATOR.NAME", "RPN",
    "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
]  # fmt: skip

# name -> (config, extra opts); the image-level mining setting is handled by `mining_command`.
SETTINGS = {
    "stock (negatives filtered)": (
        "configs/hnm_R18_FPN_cpu.yaml",
        STOCK_ARCH + ["DATALOADER.FILTER_EMPTY_ANNOTATIONS", "True"],
    ),
    "negatives kept": ("configs/hnm_R18_FPN_cpu.yaml", []),
    "+ background down-weighting": ("configs/hnm_R18_FPN_cpu_bg_weight.yaml", []),
    "+ OHEM": ("configs/hnm_R18_FPN_cpu_ohem.yaml", []),
    "+ buffer": ("configs/hnm_R18_FPN_cpu_buffer.yaml", []),
    "+ all head mechanisms": ("configs/hnm_R18_FPN_cpu_all.yaml", []),
    "+ image-level mining": ("configs/hnm_R18_FPN_cpu.yaml", []),
}
MINING = "+ image-level mining"

METRICS = [
    # column, section of results.json, key, format
    ("AP (pos)", "bbox_positives", "AP", "{:.1f}"),
    ("AP50 (pos)", "bbox_positives", "AP50", "{:.1f}"),
    ("AP (all test)", "bbox", "AP", "{:.1f}"),
    ("FA/neg img @0.5", "negatives", "fa_per_image@0.5", "{:.2f}"),
    ("neg imgs with FA @0.5", "negatives", "images_with_fa@0.5", "{:.2f}"),
]


def registration_flags(bccd_root):
    return [
        "--register-voc", "bccd_trainval", bccd_root, "trainval", "Platelets",
        "--register-voc", "bccd_test", bccd_root, "test", "Platelets",
        "--register-subset", "bccd_trainval_positives", "bccd_trainval", "positives",
        "--register-subset", "bccd_trainval_negatives", "bccd_trainval", "negatives",
    ]  # fmt: skip


def schedule_opts(iters, seed, output_dir):
    """The same budget and learning-rate schedule shape for every setting."""
    steps = f"({int(iters * 0.75)}, {int(iters * 0.92)})"
    return [
        "SEED", str(seed), "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", steps,
        "SOLVER.CHECKPOINT_PERIOD", str(iters), "OUTPUT_DIR", str(output_dir),
        "DATASETS.TEST", '("bccd_test",)',
    ]  # fmt: skip


def train_command(setting, bccd_root, iters, seed, output_dir):
    config, extra = SETTINGS[setting]
    return (
        [sys.executable, "train_net.py", "--config-file", config]
        + registration_flags(bccd_root)
        + schedule_opts(iters, seed, output_dir)
        + ["DATASETS.TRAIN", '("bccd_trainval",)']
        + extra
    )


def mining_command(bccd_root, iters, seed, output_dir, rounds, per_round):
    """Recipe: start from the positive images, mine the trainval negatives as the pool."""
    config, extra = SETTINGS[MINING]
    per_round_iters = iters // (rounds + 1)
    return (
        [sys.executable, "-m", "hnm_d2.mine", "--config-file", config]
        + registration_flags(bccd_root)
        + ["--negative-pool", "bccd_trainval_negatives", "--rounds", str(rounds)]
        + ["--per-round", str(per_round), "--iters-per-round", str(per_round_iters)]
        + schedule_opts(iters, seed, output_dir)
        + ["DATASETS.TRAIN", '("bccd_trainval_positives",)']
        + extra
    )


def final_results(setting, output_dir):
    if setting == MINING:
        report = json.loads((output_dir / "mining" / "report.json").read_text())
        return report["rounds"][-1]["results"]
    return json.loads((output_dir / "results.json").read_text())


def run_one(command, log_path, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {log_path}")
    return time.perf_counter() - start


def mean_and_spread(values):
    # results.json writes a metric that cannot be computed as null.
    values = [float("nan") if v is None else v for v in values]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), spread


def format_row(setting, runs):
    cells = [setting]
    for _, section, key, fmt in METRICS:
        mean, spread = mean_and_spread([r["results"][section][key] for r in runs])
        cells.append(f"{fmt.format(mean)} ± {fmt.format(spread)}")
    mean, spread = mean_and_spread([r["seconds"] for r in runs])
    cells.append(f"{mean:.0f} ± {spread:.0f}")
    return "| " + " | ".join(cells) + " |"


def markdown_table(all_runs):
    header = ["setting"] + [m[0] for m in METRICS] + ["time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [format_row(setting, runs) for setting, runs in all_runs.items() if runs]
    return "\n".join(lines)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bccd-root", default=str(REPO.parent / "shared/data/bccd"))
    parser.add_argument("--iters", type=int, default=240, help="training iterations per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--mining-rounds", type=int, default=2)
    parser.add_argument("--mining-per-round", type=float, default=0.2)
    parser.add_argument("--output", default="output/bench_bccd")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each with cores // jobs threads"
    )
    return parser.parse_args()


def command_for(setting, seed, output_dir, args, bccd_root):
    if setting == MINING:
        return mining_command(
            bccd_root, args.iters, seed, output_dir, args.mining_rounds, args.mining_per_round
        )
    return train_command(setting, bccd_root, args.iters, seed, output_dir)


def main():
    args = parse_args()
    bccd_root = str(Path(args.bccd_root).resolve())
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    all_runs = {setting: [] for setting in args.settings}

    def run(setting, seed):
        slug = setting.strip("+ ").split(" (")[0].replace(" ", "_").replace("-", "_")
        output_dir = (REPO / args.output / f"{slug}_seed{seed}").resolve()
        output_dir.mkdir(parents=True, exist_ok=True)
        timing = output_dir / "seconds.txt"
        if timing.exists():  # finished in an earlier invocation: reuse, do not retrain
            seconds = float(timing.read_text())
        else:
            command = command_for(setting, seed, output_dir, args, bccd_root)
            seconds = run_one(command, output_dir / "benchmark.log", threads)
            timing.write_text(f"{seconds:.1f}")
        sys.stderr.write(f"done: {setting}, seed {seed}, {seconds:.0f} s\n")
        results = final_results(setting, output_dir)
        return setting, {"seed": seed, "seconds": seconds, "results": results}

    jobs = [(setting, seed) for seed in args.seeds for setting in args.settings]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for setting, run_record in pool.map(lambda job: run(*job), jobs):
            all_runs[setting].append(run_record)
            (REPO / args.output / "runs.json").write_text(json.dumps(all_runs, indent=2))
    print(
        f"BCCD Platelets, {args.iters} iterations, seeds {args.seeds}, "
        f"{args.jobs} run(s) at a time with {threads} thread(s) each:\n"
    )
    print(markdown_table(all_runs))


if __name__ == "__main__":
    main()
