"""The launcher's pieces shared by train_net.py and ``python -m hnm_d2.mine``."""

import logging
import math
import os

import torch
import torch.distributed as dist
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..compat import launch_runs_cpu_processes
from ..config import add_hnm_config
from ..data import (
    add_registration_arguments,
    register_from_args,
    register_synthetic_splits,
)
from ..utils.atomic import write_json_atomically

__all__ = [
    "launch_with_args",
    "leave_process_group",
    "hnm_argument_parser",
    "prepare_datasets",
    "register_datasets",
    "load_config",
    "setup",
    "log_summary",
    "save_results",
    "format_figure",
]

logger = logging.getLogger(__name__)


def hnm_argument_parser(epilog=None):
    """detectron2's default parser plus the dataset registration flags."""
    parser = default_argument_parser(epilog)
    add_registration_arguments(parser)
    parser.add_argument(
        "--synthetic",
        metavar="DIR",
        help="generate (once) the embedded synthetic dataset under DIR and register "
        "synthetic_train, synthetic_test and synthetic_pool",
    )
    return parser


def prepare_datasets(args):
    """Work that must happen once, in the launching process, before workers start.

    Generating the synthetic images here keeps two worker processes from writing the same
    files at the same time; the workers then only register what is on disk.
    """
    if args.synthetic:
        register_synthetic_splits(args.synthetic)


def launch_with_args(main_func, args):
    """Run ``main_func(args)`` on the processes the command line asks for (--num-gpus,
    --num-machines, --machine-rank, --dist-url), through detectron2's ``launch``.

    Raises:
        RuntimeError: several processes without CUDA asked of a detectron2 whose launch
            cannot start them (0.6's asserts that CUDA is there).
    """
    if args.num_gpus > 1 and not torch.cuda.is_available() and not launch_runs_cpu_processes():
        raise RuntimeError(
            f"--num-gpus {args.num_gpus} on a machine without CUDA: this detectron2's launch "
            "starts GPU (NCCL) processes only; CPU (gloo) processes need a detectron2 from "
            "after 0.6 (upstream main since January 2023). Run one process (--num-gpus 1) or "
            "use a newer detectron2."
        )
    launch(
        _run_then_leave,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(main_func, args),
    )


def _run_then_leave(main_func, args):
    main_func(args)
    leave_process_group()


def leave_process_group():
    """End a worker's part in the process group: wait for every rank, then destroy the group.

    detectron2's ``launch`` leaves the group to the interpreter's exit, where gloo's threads
    can abort a rank ("terminate called without an active exception"), and ``launch`` then
    fails a run that finished. A no-op in a single process.
    """
    if comm.get_world_size() > 1:
        comm.synchronize()
        dist.destroy_process_group()


def register_datasets(args):
    """Register the datasets named on the command line; runs in every worker process.

    detectron2's ``launch`` starts workers with the spawn method, so registrations made in the
    launching process do not reach them: each worker registers for itself.
    """
    register_from_args(args)
    if args.synthetic:
        register_synthetic_splits(args.synthetic)


def load_config(args):
    """Config with the hnm_d2 keys, merged from ``--config-file`` and the command-line opts;
    frozen. Nothing else is set up (see :func:`setup`)."""
    cfg = get_cfg()
    add_hnm_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def setup(args):
    """:func:`load_config`, then detectron2's ``default_setup`` (loggers writing to the terminal
    and OUTPUT_DIR/log.txt, the config saved and logged, the seed) for hnm_d2's loggers too."""
    cfg = load_config(args)
    default_setup(cfg, args)
    # detectron2's setup configures its own loggers only; hnm_d2's go to the same places.
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="hnm_d2")
    return cfg


def log_summary(results, dataset_names=None):
    """One line per test set, named after it: AP on positive images and false alarms on
    negative images.

    Args:
        results (dict): evaluation results, keyed by test set name; or, with
            ``dataset_names``, what DefaultTrainer.test returns, which unwraps a lone test
            set's results.
        dataset_names (Sequence[str] or None): the test sets of ``results`` when it is
            DefaultTrainer.test's return (cfg.DATASETS.TEST); None when ``results`` is keyed
            by test set name already.
    """
    if not results:
        return
    if dataset_names is not None and len(dataset_names) == 1:
        results = {dataset_names[0]: results}
    for name, res in results.items():
        positives = res.get("bbox_positives", {})
        negatives = res.get("negatives", {})
        logger.info(
            "Summary [%s]: AP %s / AP50 %s on positive images; false alarms per negative image "
            "at recall 0.9: %s, at score 0.5: %s; MR^-2 %s; negative images with any alarm at "
            "0.5: %s%%",
            name,
            format_figure(positives.get("AP"), ".1f"),
            format_figure(positives.get("AP50"), ".1f"),
            format_figure(negatives.get("fa_per_image@recall0.9"), ".3f"),
            format_figure(negatives.get("fa_per_image@0.5"), ".3f"),
            format_figure(negatives.get("log_avg_miss_rate"), ".3f"),
            format_figure(100 * negatives.get("images_with_fa@0.5", math.nan), ".0f"),
        )


def format_figure(value, spec):
    # "n/a" rather than "nan" where a figure cannot be computed (e.g. a recall never reached).
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def save_results(results, output_dir, filename="results.json"):
    """Write the evaluation results as strict JSON (main process), for scripts that compare
    runs: a metric that cannot be computed (NaN) is written as null.

    Returns:
        str or None: the file written (None without results).
    """
    if not results:
        return None
    path = os.path.join(output_dir, filename)
    write_json_atomically(path, results)
    return path
