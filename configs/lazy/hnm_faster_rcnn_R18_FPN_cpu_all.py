"""configs/hnm_R18_FPN_cpu_all.yaml as a LazyConfig: every head mechanism of hnm_d2 together.

OHEM over RoIs and over RPN anchors, the hard-negative buffer, and background down-weighting of
the RPN objectness loss (OHEM already chooses the RoI background terms), switched on by the
constructor arguments of hnm_d2's classes in the base config.
"""

from detectron2.config import LazyCall as L

from hnm_d2.modeling import HardNegativeBuffer

from .hnm_faster_rcnn_R18_FPN_cpu import dataloader, lr_multiplier, model, optimizer, train

# The parts of this config, the unchanged ones too: LazyConfig makes the config of the file's
# globals (__all__ tells linters that the imports are used).
__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

model.roi_heads.ohem_enabled = True
model.roi_heads.hard_negative_buffer = L(HardNegativeBuffer)(
    capacity=4096,
    per_image=16,
    max_age=1000,
    dedup_iou=0.7,
    score_thresh=0.5,
    # From iteration 300 on, once the from-scratch model tells objects from background.
    warmup_iters=300,
)
model.proposal_generator.update(ohem_enabled=True, ohem_neg_pos_ratio=3.0, bg_weight=0.5)

train.output_dir = "output/lazy_hnm_R18_FPN_cpu_all"
