r"""``python -m hnm_d2.mine`` (console script ``hnm-mine``): image-level hard negative mining.

    python -m hnm_d2.mine --config-file configs/hnm_R18_FPN_cpu.yaml \
        --synthetic output/mining/data --negative-pool synthetic_pool \
        --rounds 3 --per-round 0.15 --iters-per-round 150 \
        DATASETS.TRAIN '("synthetic_train",)' DATASETS.TEST '("synthetic_test",)' \
        OUTPUT_DIR output/mining

Round 0 trains on DATASETS.TRAIN; each of the --rounds mining rounds scores the pool with the
last model, adds the --per-round highest-scored pool images to the training set and retrains;
every round is evaluated on DATASETS.TEST. Reports and plots go to OUTPUT_DIR/mining/ (see
:mod:`hnm_d2.engine.mining`).

With --online there are no rounds to retrain: one run of SOLVER.MAX_ITER iterations on one
schedule mines --rounds times, every --mine-every iterations, moving the --per-round hardest
pool images into its training stream (see :mod:`hnm_d2.engine.online_mining`).

After every round (step) OUTPUT_DIR/mining/review.html shows the images mined so far: judge them,
export verdicts.json and run the same command again with --verdicts verdicts.json (and a larger
--rounds to mine on): the next round trains without the images that hold an object or are
unsure, and with the detections judged false alarms as background boxes of their images (see
:mod:`hnm_d2.engine.verdicts`).

Takes every flag of train_net.py (--num-gpus, --register-*, --synthetic, config opts) but
--eval-only. The run always resumes from OUTPUT_DIR, so --resume changes nothing: the same
command again continues an interrupted run, and again with a larger --rounds mines further.
"""

import argparse

from .config import MINING_SELECTIONS
from .engine.launcher import (
    hnm_argument_parser,
    launch_with_args,
    prepare_datasets,
    register_datasets,
    setup,
)
from .engine.mining import run_mining
from .engine.online_mining import run_online_mining

__all__ = ["mining_argument_parser", "mining_opts", "mining_config", "mine", "main"]


def mining_argument_parser():
    """train_net.py's parser plus the mining flags; each overrides its HNM.MINING key."""
    parser = hnm_argument_parser(epilog=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    group = parser.add_argument_group("mining (hnm_d2.mine); unset flags keep HNM.MINING.*")
    group.add_argument(
        "--negative-pool",
        nargs="+",
        metavar="NAME",
        help="registered datasets of candidate negative images (HNM.MINING.POOL)",
    )
    group.add_argument("--rounds", type=int, help="mining rounds after round 0 (HNM.MINING.ROUNDS)")
    group.add_argument(
        "--per-round",
        type=float,
        help="images added per round: a count >= 1, or a fraction in (0, 1) of the current "
        "training set (HNM.MINING.PER_ROUND)",
    )
    group.add_argument(
        "--selection",
        choices=MINING_SELECTIONS,
        help="which scored pool images a round adds: 'hardest' (mining) or 'random', as many "
        "drawn uniformly from the same candidates, seeded by SEED and the round: the control "
        "for mining's choice (HNM.MINING.SELECTION)",
    )
    group.add_argument(
        "--iters-per-round",
        type=int,
        help="training iterations of each round; 0 = SOLVER.MAX_ITER. SOLVER.STEPS and "
        "WARMUP_ITERS are scaled to match (HNM.MINING.ITERS_PER_ROUND)",
    )
    group.add_argument(
        "--online",
        action="store_true",
        default=None,
        help="one training run of SOLVER.MAX_ITER iterations that mines --rounds times, every "
        "--mine-every iterations, instead of retraining per round (HNM.MINING.ONLINE)",
    )
    group.add_argument(
        "--mine-every",
        type=int,
        help="with --online: iterations between mining steps; 0 = MAX_ITER // (rounds + 1) "
        "(HNM.MINING.MINE_EVERY)",
    )
    group.add_argument(
        "--verdicts",
        metavar="FILE",
        help="verdicts.json exported by the review page (OUTPUT_DIR/mining/review.html): images "
        "judged to hold an object leave training and the pool for mining/to_annotate.json, unsure "
        "ones are left out until judged, detections judged false alarms train as background "
        "with their image (HNM.MINING.VERDICTS)",
    )
    group.add_argument(
        "--from-scratch",
        action="store_true",
        default=None,
        help="train every round from MODEL.WEIGHTS instead of the previous round's weights "
        "(HNM.MINING.FROM_SCRATCH)",
    )
    return parser


_FLAG_KEYS = {
    "negative_pool": "HNM.MINING.POOL",
    "rounds": "HNM.MINING.ROUNDS",
    "per_round": "HNM.MINING.PER_ROUND",
    "selection": "HNM.MINING.SELECTION",
    "iters_per_round": "HNM.MINING.ITERS_PER_ROUND",
    "from_scratch": "HNM.MINING.FROM_SCRATCH",
    "online": "HNM.MINING.ONLINE",
    "mine_every": "HNM.MINING.MINE_EVERY",
    "verdicts": "HNM.MINING.VERDICTS",
}


def mining_opts(args):
    """The mining flags given on the command line as config opts (KEY, value, ...).

    They come after the config file and the positional opts, so a flag wins over both.
    """
    opts = []
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            opts += [key, tuple(value) if flag == "negative_pool" else value]
    return opts


def mining_config(args):
    """Register the datasets and build the config of a mining run (the flags win)."""
    register_datasets(args)
    return setup(argparse.Namespace(**{**vars(args), "opts": args.opts + mining_opts(args)}))


def mine(args):
    """One process's work: the config, then the rounds or the online run.

    Returns:
        dict: the mining report (see :func:`hnm_d2.engine.mining.run_mining` and
        :func:`hnm_d2.engine.online_mining.run_online_mining`).
    """
    cfg = mining_config(args)
    return run_online_mining(cfg) if cfg.HNM.MINING.ONLINE else run_mining(cfg)


def main(argv=None):
    """Parse ``argv`` (default: the command line); run the loop on --num-gpus processes."""
    parser = mining_argument_parser()
    args = parser.parse_args(argv)
    if args.eval_only:
        parser.error(
            "--eval-only is not a mining option: evaluate a round's weights with "
            "train_net.py --eval-only MODEL.WEIGHTS OUTPUT_DIR/mining/round_K/model_final.pth"
        )
    prepare_datasets(args)
    launch_with_args(mine, args)


if __name__ == "__main__":
    main()
