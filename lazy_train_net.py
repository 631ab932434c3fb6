#!/usr/bin/env python
"""Train and evaluate hnm_d2 models from LazyConfig (Python) files.

detectron2's tools/lazyconfig_train_net.py with what train_net.py adds: the dataset flags
(--synthetic, --register-coco, ...), atomic checkpoints, the hard-negative buffer's checkpoint
hook, and the summary line and results.json of the last evaluation.

    python lazy_train_net.py --config-file configs/lazy/hnm_faster_rcnn_R18_FPN_cpu_all.py \
        --synthetic output/lazy/data train.output_dir=output/lazy/all

Overrides are LazyConfig's ``key=value``. Add --eval-only with train.init_checkpoint=... to
evaluate, --resume to continue from train.output_dir, and --num-gpus N for N processes (GPUs
with NCCL, or CPU processes with gloo).
"""

from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    create_ddp_model,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from omegaconf import OmegaConf

from hnm_d2.engine import (
    AtomicDetectionCheckpointer,
    HNMCheckpointer,
    ddp_device_ids,
    hnm_argument_parser,
    launch_with_args,
    log_summary,
    periodic_checkpointer,
    prepare_datasets,
    register_datasets,
    save_results,
)


def setup(args):
    """The LazyConfig of --config-file with the command line's ``key=value`` overrides."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    # detectron2's setup configures its own loggers only; hnm_d2's go to the same places.
    setup_logger(output=cfg.train.output_dir, distributed_rank=comm.get_rank(), name="hnm_d2")
    return cfg


def check_datasets_registered(cfg, parts):
    """Fail before anything is built when a loader of ``parts`` ("train", "test") names a dataset
    that no flag registered (detectron2 would fail later, without naming the key or the flags).
    """
    registered = set(DatasetCatalog.list())
    for part in parts:
        key = f"dataloader.{part}.dataset.names"
        names = OmegaConf.select(cfg, key, default=None) or []
        for name in [names] if isinstance(names, str) else names:
            if name not in registered:
                raise KeyError(
                    f"{key} names the dataset {name!r}, which is not registered. Pass "
                    "--synthetic DIR for the synthetic_* splits, or register it with "
                    "--register-coco, --register-voc, --register-yolo or --register-negatives, "
                    f"or set {key}=<a registered dataset>."
                )


def build_model(cfg):
    return instantiate(cfg.model).to(cfg.train.device)


def wrap_ddp(cfg, model):
    """``model`` in DistributedDataParallel with > 1 process (detectron2's create_ddp_model)."""
    return create_ddp_model(model, device_ids=ddp_device_ids(cfg.train.device), **cfg.train.ddp)


def do_test(cfg, model):
    """Results of ``cfg.dataloader.evaluator`` on ``cfg.dataloader.test`` ({} without one)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(results)
    return results


def do_train(args, cfg):
    """Train for ``cfg.train.max_iter`` iterations; return the last evaluation's results."""
    model = build_model(cfg)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    model = wrap_ddp(cfg, model)
    trainer_class = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
    trainer = trainer_class(model, train_loader, optimizer)
    checkpointer = HNMCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    last_results = {}

    def evaluate():
        # EvalHook only logs what it gets back: the summary and results.json need the last.
        last_results.clear()
        last_results.update(do_test(cfg, model))
        return last_results

    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            periodic_checkpointer(checkpointer, **cfg.train.checkpointer),
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            (
                hooks.PeriodicWriter(
                    default_writers(cfg.train.output_dir, cfg.train.max_iter),
                    period=cfg.train.log_period,
                )
                if comm.is_main_process()
                else None
            ),
        ]
    )
    resuming = args.resume and checkpointer.has_checkpoint()
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # A checkpoint stores the iteration that had just finished.
    trainer.train(trainer.iter + 1 if resuming else 0, cfg.train.max_iter)
    return last_results


def report(cfg, results):
    """Log the summary line and write results.json, as train_net.py does (main process)."""
    if not results or not comm.is_main_process():
        return
    names = cfg.dataloader.test.dataset.names
    log_summary(results, [names if isinstance(names, str) else "+".join(names)])
    save_results(results, cfg.train.output_dir)


def main(args):
    register_datasets(args)
    cfg = setup(args)
    check_datasets_registered(cfg, ["test"] if args.eval_only else ["train", "test"])
    if args.eval_only:
        model = wrap_ddp(cfg, build_model(cfg))
        AtomicDetectionCheckpointer(model, save_dir=cfg.train.output_dir).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        results = do_test(cfg, model)
    else:
        results = do_train(args, cfg)
    report(cfg, results)
    return results


if __name__ == "__main__":
    args = hnm_argument_parser().parse_args()
    prepare_datasets(args)
    launch_with_args(main, args)
