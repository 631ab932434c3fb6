from .buffer_checkpointing import HNMCheckpointer, hard_negative_buffers, periodic_checkpointer
from .checkpoint import AtomicDetectionCheckpointer, CheckpointError
from .ddp import ddp_device_ids
from .launcher import (
    hnm_argument_parser,
    launch_with_args,
    leave_process_group,
    load_config,
    log_summary,
    prepare_datasets,
    register_datasets,
    save_results,
    setup,
)
from .mining import run_mining
from .mining_state import MiningStateError
from .pool_scoring import (
    images_per_round,
    rank_by_score,
    score_pool,
    select_at_random,
    select_hardest,
)
from .progress import ProgressBar
from .trainer import HNMTrainer

__all__ = [
    "AtomicDetectionCheckpointer",
    "CheckpointError",
    "HNMCheckpointer",
    "HNMTrainer",
    "MiningStateError",
    "ProgressBar",
    "hnm_argument_parser",
    "launch_with_args",
    "leave_process_group",
    "load_config",
    "images_per_round",
    "log_summary",
    "prepare_datasets",
    "rank_by_score",
    "register_datasets",
    "run_mining",
    "save_results",
    "score_pool",
    "select_at_random",
    "select_hardest",
    "setup",
    "ddp_device_ids",
    "hard_negative_buffers",
    "periodic_checkpointer",
]
