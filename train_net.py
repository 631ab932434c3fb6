#!/usr/bin/env python
"""Train and evaluate a Faster R-CNN with hnm_d2 (detectron2's canonical launcher).

    python train_net.py --config-file configs/hnm_R18_FPN_cpu.yaml \
        --register-voc bccd_trainval /path/to/bccd trainval Platelets \
        --register-voc bccd_test /path/to/bccd test Platelets \
        DATASETS.TRAIN '("bccd_trainval",)' DATASETS.TEST '("bccd_test",)'

Add --eval-only with MODEL.WEIGHTS to evaluate, --resume to continue from OUTPUT_DIR, and
--num-gpus N for N processes (GPUs with NCCL, or CPU processes with gloo).
"""

from detectron2.utils import comm

from hnm_d2.engine import (
    AtomicDetectionCheckpointer,
    HNMTrainer,
    hnm_argument_parser,
    launch_with_args,
    log_summary,
    prepare_datasets,
    register_datasets,
    save_results,
    setup,
)


def main(args):
    register_datasets(args)
    cfg = setup(args)
    if args.eval_only:
        model = HNMTrainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = HNMTrainer.test(cfg, model)
    else:
        trainer = HNMTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    if comm.is_main_process():
        log_summary(results, cfg.DATASETS.TEST)
        save_results(results, cfg.OUTPUT_DIR)
    return results


if __name__ == "__main__":
    args = hnm_argument_parser().parse_args()
    prepare_datasets(args)
    launch_with_args(main, args)
