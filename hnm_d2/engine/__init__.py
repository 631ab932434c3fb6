from .checkpoint import AtomicDetectionCheckpointer, CheckpointError
from .launcher import (
    hnm_argument_parser,
    log_summary,
    prepare_datasets,
    register_datasets,
    save_results,
    setup,
)
from .trainer import HNMTrainer

__all__ = [
    "AtomicDetectionCheckpointer",
    "CheckpointError",
    "HNMTrainer",
    "hnm_argument_parser",
    "log_summary",
    "prepare_datasets",
    "register_datasets",
    "save_results",
    "setup",
]
