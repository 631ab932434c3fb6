"""configs/hnm_R18_FPN_cpu.yaml as a LazyConfig: a small Faster R-CNN for 2 CPU cores.

ResNet-18 FPN with 64 channels and BatchNorm, trained from scratch (no pretrained weights),
~256 px inputs, batch 4, on the synthetic data (``--synthetic DIR`` registers it). The model is
detectron2's model-zoo Mask R-CNN FPN config without its mask head, with hnm_d2's classes in
place of the stock ones. Every hnm_d2 mechanism is off (the constructors' defaults), as in the
YAML: this trains stock detectron2 with the negative images kept. The mechanisms are switched
on by constructor arguments, see hnm_faster_rcnn_R18_FPN_cpu_all.py.

    python lazy_train_net.py --config-file configs/lazy/hnm_faster_rcnn_R18_FPN_cpu.py \
        --synthetic output/lazy/data train.output_dir=output/lazy/base
"""

import detectron2.data.transforms as T
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

from hnm_d2.data import NegativeAwareDatasetMapper, build_negative_share_train_loader
from hnm_d2.evaluation import NegativeImageEvaluator
from hnm_d2.modeling import HNMRCNN, HNMRPN, HNMFastRCNNOutputLayers, HNMROIHeads

# ------------------------------------------------------------------------------------ model

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model._target_ = HNMRCNN
# Faster R-CNN: without mask_in_features StandardROIHeads builds no mask branch.
for key in ("mask_in_features", "mask_pooler", "mask_head"):
    model.roi_heads.pop(key)

# From scratch: every stage trains (freeze_at 0), with trainable BatchNorm; the zoo's
# FrozenBN suits pretrained weights only.
model.backbone.bottom_up.update(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
    stages=L(ResNet.make_default_stages)(depth=18, norm="BN"),
    freeze_at=0,
)
model.backbone.update(out_channels=64, norm="BN")

model.proposal_generator.update(
    _target_=HNMRPN,
    pre_nms_topk=(1000, 500),  # (training, test), per FPN level
    post_nms_topk=(500, 300),
)
# The heads' input widths follow backbone.out_channels and box_head.fc_dims (interpolations), so
# overriding those two resizes the whole model. The zoo's input shapes are ShapeSpec objects,
# which detectron2 0.6 cannot edit (named tuples): they are replaced by lazy ones.
model.proposal_generator.head.in_channels = "${...backbone.out_channels}"
model.proposal_generator.anchor_generator.sizes = [[16], [32], [64], [128], [256]]  # 256 px

model.roi_heads.update(_target_=HNMROIHeads, num_classes=1, batch_size_per_image=128)
model.roi_heads.box_head.input_shape = L(ShapeSpec)(
    channels="${....backbone.out_channels}",
    height=model.roi_heads.box_head.input_shape.height,  # the zoo's pooler resolution
    width=model.roi_heads.box_head.input_shape.width,
)
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.update(
    _target_=HNMFastRCNNOutputLayers,
    test_topk_per_image=100,  # named here because the evaluator reads it
)
model.roi_heads.box_predictor.input_shape = L(ShapeSpec)(channels="${...box_head.fc_dims[1]}")
# detectron2's default normalisation, the YAML's, rather than the zoo's ImageNet std: both
# configs build the same model.
model.pixel_std = [1.0, 1.0, 1.0]

# ------------------------------------------------------------------------------------- data

dataloader = OmegaConf.create()

# detectron2's build_detection_train_loader with hnm_d2's sampler: negative_fraction is
# HNM.DATA.NEGATIVE_FRACTION (-1: negatives at their share of the dataset, detectron2's
# TrainingSampler; a value in [0, 1] fixes their share of every batch in expectation).
dataloader.train = L(build_negative_share_train_loader)(
    # filter_empty=False keeps the negative images, which detectron2 drops by default.
    dataset=L(get_detection_dataset_dicts)(names="synthetic_train", filter_empty=False),
    # Yields negative images as zero-box instances and checks every annotation.
    mapper=L(NegativeAwareDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(256,), max_size=455, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        num_classes="${model.roi_heads.num_classes}",  # the range of valid category ids
    ),
    negative_fraction=-1,
    total_batch_size=4,
    num_workers=1,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_test", filter_empty=False),
    mapper=L(NegativeAwareDatasetMapper)(
        is_train=False,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=256, max_size=455, sample_style="choice")
        ],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=1,
)

# What HNMTrainer evaluates: COCO AP on the whole test set, beside AP on its positive images
# and the false alarms on its negative images.
dataloader.evaluator = L(DatasetEvaluators)(
    evaluators=[
        L(COCOEvaluator)(
            dataset_name="${....test.dataset.names}",
            tasks=("bbox",),
            output_dir="${train.output_dir}/inference",
        ),
        L(NegativeImageEvaluator)(
            dataset_name="${....test.dataset.names}",
            output_dir="${train.output_dir}/inference",
            score_thresholds=[0.05, 0.3, 0.5, 0.7],
            recalls=[0.8, 0.9],
            match_iou=0.5,
            # It warns where the model's output floor or cap would make it undercount.
            score_thresh_test="${model.roi_heads.box_predictor.test_score_thresh}",
            detections_per_image="${model.roi_heads.box_predictor.test_topk_per_image}",
        ),
    ]
)

# ---------------------------------------------------------------------------------- solver

optimizer = model_zoo.get_config("common/optim.py").SGD
optimizer.lr = 0.01

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01], milestones=[450, 550], num_updates="${train.max_iter}"
    ),
    warmup_length=50 / 600,  # 50 iterations, as a share of train.max_iter
    warmup_factor=0.001,
)

train = model_zoo.get_config("common/train.py").train
train.update(
    output_dir="output/lazy_hnm_R18_FPN_cpu",
    max_iter=600,
    checkpointer=dict(period=200, max_to_keep=100),
    eval_period=0,  # evaluate once, at the end
    device="cpu",
    seed=0,
)
