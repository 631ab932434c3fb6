"""The LazyConfig files and ``lazy_train_net.py``: each config builds what its YAML twin builds
(weight for weight, with hnm_d2's classes and data path), and the README's lazy command trains,
evaluates and checkpoints with the mechanisms on."""

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model
from detectron2.solver import LRMultiplier, build_lr_scheduler
from helpers import load_script, run_python
from omegaconf import ListConfig, OmegaConf

import hnm_d2
from hnm_d2.config import HNMConfigError
from hnm_d2.data import NegativeAwareDatasetMapper
from hnm_d2.evaluation import NegativeImageEvaluator
from hnm_d2.modeling import (
    HNMRCNN,
    HNMRPN,
    HardNegativeBuffer,
    HNMFastRCNNOutputLayers,
    HNMROIHeads,
)

REPO = Path(__file__).resolve().parents[1]
BASE = "configs/lazy/hnm_faster_rcnn_R18_FPN_cpu.py"
ALL = "configs/lazy/hnm_faster_rcnn_R18_FPN_cpu_all.py"
YAML_TWIN = {BASE: "configs/hnm_R18_FPN_cpu.yaml", ALL: "configs/hnm_R18_FPN_cpu_all.yaml"}
# lazy key -> the YAML key it mirrors, for the settings that are plain values on both sides.
MIRRORED_KEYS = {
    "dataloader.train.total_batch_size": "SOLVER.IMS_PER_BATCH",
    "dataloader.train.num_workers": "DATALOADER.NUM_WORKERS",
    "dataloader.train.dataset.filter_empty": "DATALOADER.FILTER_EMPTY_ANNOTATIONS",
    "dataloader.train.negative_fraction": "HNM.DATA.NEGATIVE_FRACTION",
    "optimizer.lr": "SOLVER.BASE_LR",
    "optimizer.momentum": "SOLVER.MOMENTUM",
    "optimizer.weight_decay": "SOLVER.WEIGHT_DECAY",
    "optimizer.params.weight_decay_norm": "SOLVER.WEIGHT_DECAY_NORM",
    "train.max_iter": "SOLVER.MAX_ITER",
    "train.checkpointer.period": "SOLVER.CHECKPOINT_PERIOD",
    "train.eval_period": "TEST.EVAL_PERIOD",
    "train.seed": "SEED",
}
# configs/quick_schedules/hnm_instant_test.yaml as overrides: a tiny model on tiny images, for
# two iterations.
TINY = [
    "model.backbone.out_channels=32",
    "model.proposal_generator.anchor_generator.sizes=[[8],[16],[32],[64],[128]]",
    "model.proposal_generator.pre_nms_topk=[200,100]",
    "model.proposal_generator.post_nms_topk=[100,50]",
    "model.roi_heads.batch_size_per_image=64",
    "model.roi_heads.box_head.fc_dims=[64,64]",
    "dataloader.train.mapper.augmentations.0.short_edge_length=[96]",
    "dataloader.train.mapper.augmentations.0.max_size=160",
    "dataloader.test.mapper.augmentations.0.short_edge_length=96",
    "dataloader.test.mapper.augmentations.0.max_size=160",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "optimizer.lr=0.005",
    "lr_multiplier.scheduler.values=[1.0]",
    "lr_multiplier.scheduler.milestones=[]",
    "train.max_iter=2",
    "train.log_period=1",
]
# ... and, as hnm_all_mechanisms_instant_test.yaml, a buffer that fills on an untrained model.
TINY_BUFFER = [
    "model.roi_heads.hard_negative_buffer.score_thresh=0.0",
    "model.roi_heads.hard_negative_buffer.warmup_iters=0",
]


def load_lazy(path, overrides=()):
    return LazyConfig.apply_overrides(LazyConfig.load(str(REPO / path)), list(overrides))


def load_yaml(path):
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(str(REPO / path))
    return cfg


# Marks a value that is not a plain setting.
NOT_PLAIN = object()


def plain(value):
    """``value`` if it is a number, string or None, or a list of such (tuples and ListConfigs
    read as lists, so that both configs' sequences compare equal); else NOT_PLAIN."""
    if isinstance(value, (list, tuple, ListConfig)):
        items = [plain(v) for v in value]
        return NOT_PLAIN if any(i is NOT_PLAIN for i in items) else items
    return value if value is None or isinstance(value, (bool, int, float, str)) else NOT_PLAIN


def plain_settings(obj):
    """The type and the plain attributes (see :func:`plain`) of ``obj``."""
    attributes = {k: plain(v) for k, v in vars(obj).items()}
    return type(obj).__name__, {k: v for k, v in attributes.items() if v is not NOT_PLAIN}


def model_settings(model):
    """Module name -> plain settings, over every module of ``model``."""
    return {name: plain_settings(module) for name, module in model.named_modules()}


def mapper_settings(mapper):
    """The mapper's plain settings and those of each of its augmentations."""
    name, attributes = plain_settings(mapper)
    if not mapper.is_train:
        # Category ids are checked in training only: the lazy test mapper is not given them.
        attributes.pop("num_classes")
    return name, attributes, [plain_settings(a) for a in mapper.augmentations.augs]


def readme_section():
    readme = (REPO / "README.md").read_text()
    return readme.split("\n## LazyConfig\n", 1)[1].split("\n## ", 1)[0]


def readme_command():
    """The README's lazy training command, as arguments after ``python``."""
    command = re.search(r"```bash\n(.*?)```", readme_section(), flags=re.S).group(1)
    args = shlex.split(command.replace("\\\n", " "))
    assert args[:2] == [".venv/bin/python", "lazy_train_net.py"], args
    return args[1:]


def test_every_lazy_config_has_a_yaml_twin():
    found = {str(p.relative_to(REPO)) for p in (REPO / "configs" / "lazy").glob("*.py")}
    assert found == set(YAML_TWIN)


@pytest.mark.parametrize("path", sorted(YAML_TWIN))
def test_lazy_config_builds_the_model_of_its_yaml_twin(path):
    torch.manual_seed(0)
    lazy = instantiate(load_lazy(path).model)
    torch.manual_seed(0)
    yacs = build_model(load_yaml(YAML_TWIN[path]))

    assert isinstance(lazy, HNMRCNN) and isinstance(lazy.proposal_generator, HNMRPN)
    assert isinstance(lazy.roi_heads, HNMROIHeads)
    assert isinstance(lazy.roi_heads.box_predictor, HNMFastRCNNOutputLayers)
    assert not lazy.roi_heads.mask_on
    # Same modules with the same settings, and the same initial weights from the same seed.
    assert model_settings(lazy) == model_settings(yacs)
    expected = yacs.state_dict()
    assert lazy.state_dict().keys() == expected.keys()
    for key, value in lazy.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_the_all_mechanisms_config_switches_every_mechanism_on():
    model = instantiate(load_lazy(ALL, TINY).model)
    assert model.roi_heads.ohem_enabled and model.proposal_generator.ohem_enabled
    assert isinstance(model.roi_heads.hard_negative_buffer, HardNegativeBuffer)
    assert model.proposal_generator.bg_weight == 0.5
    # The tiny overrides reach every layer whose width follows the FPN's and the box head's.
    assert model.roi_heads.box_predictor.cls_score.in_features == 64
    assert model.proposal_generator.rpn_head.conv.in_channels == 32


def test_data_and_schedule_are_those_of_the_yaml():
    lazy, yacs = load_lazy(BASE), load_yaml(YAML_TWIN[BASE])
    for lazy_key, yaml_key in MIRRORED_KEYS.items():
        yaml_value = yacs
        for part in yaml_key.split("."):
            yaml_value = getattr(yaml_value, part)
        assert OmegaConf.select(lazy, lazy_key) == yaml_value, (lazy_key, yaml_key)
    for part, is_train in (("train", True), ("test", False)):
        lazy_mapper = instantiate(lazy.dataloader[part].mapper)
        yaml_mapper = NegativeAwareDatasetMapper(yacs, is_train)
        assert mapper_settings(lazy_mapper) == mapper_settings(yaml_mapper), part
    max_iter = yacs.SOLVER.MAX_ITER
    lazy_schedule = instantiate(lazy.lr_multiplier)
    # approx: the YAML's values are powers of SOLVER.GAMMA (0.1 ** 2 is not 0.01).
    assert multipliers(lambda o: LRMultiplier(o, lazy_schedule, max_iter), max_iter) == (
        pytest.approx(multipliers(lambda o: build_lr_scheduler(yacs, o), max_iter))
    )


def multipliers(build_scheduler, max_iter):
    """The learning-rate multiplier at every iteration of the scheduler that
    ``build_scheduler(optimizer)`` returns."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = build_scheduler(optimizer)
    rates = []
    for _ in range(max_iter):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_loaders_and_evaluator_are_hnm_d2s(synthetic_datasets, tmp_path):
    cfg = load_lazy(BASE, [*TINY, f"train.output_dir={tmp_path}"])
    batch = next(iter(instantiate(cfg.dataloader.train)))
    # NegativeAwareDatasetMapper's output: the transforms the hard-negative buffer needs, and
    # instances on every image, negative ones included.
    assert len(batch) == 2 and all("transforms" in x and "instances" in x for x in batch)
    evaluators = instantiate(cfg.dataloader.evaluator)._evaluators
    assert [type(e) for e in evaluators] == [COCOEvaluator, NegativeImageEvaluator]


def negative_share(cfg, num_batches=100):
    """The share of negative images among the first batches of cfg's train loader."""
    loader = instantiate(cfg.dataloader.train)
    images = [x for _, batch in zip(range(num_batches), loader) for x in batch]
    return sum(len(x["instances"]) == 0 for x in images) / len(images)


def test_the_train_loader_takes_the_negative_share(synthetic_datasets):
    # The synthetic training split is one third negative: ask for none, then for half.
    assert negative_share(load_lazy(BASE, [*TINY, "dataloader.train.negative_fraction=0"])) == 0
    half = load_lazy(BASE, [*TINY, "dataloader.train.negative_fraction=0.5"])
    assert 0.4 < negative_share(half) < 0.6


def test_the_launcher_names_an_unregistered_dataset_and_the_flags_that_register_it():
    launcher = load_script("lazy_train_net.py")
    cfg = load_lazy(BASE, ["dataloader.train.dataset.names=[my_train]"])
    expected = "dataloader.train.dataset.names names the dataset 'my_train'.*--register-coco"
    with pytest.raises(KeyError, match=expected):
        launcher.check_datasets_registered(cfg, ["train"])


def test_readme_shows_the_all_mechanisms_config():
    snippet = re.search(r"```python\n(.*?)```", readme_section(), flags=re.S).group(1)
    assert snippet in (REPO / ALL).read_text()


def test_readme_command_trains_evaluates_and_checkpoints(tmp_path, synthetic_root):
    out = tmp_path / "out"
    args = readme_command()
    args[args.index("--synthetic") + 1] = synthetic_root
    # Later overrides win: the README's output folder is replaced by the test's.
    log = run_python([*args, *TINY, *TINY_BUFFER, f"train.output_dir={out}"], timeout=300)

    lines = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    steps = [m for m in lines if "total_loss" in m]
    assert [m["iteration"] for m in steps] == [0, 1]
    assert all(math.isfinite(v) for m in steps for k, v in m.items() if "loss" in k)
    logged = set().union(*lines)
    assert {"hnm/ohem_kept_neg", "hnm/rpn_ohem_neg", "hnm/buffer_size"} <= logged
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert torch.load(out / "model_final.pth", map_location="cpu")["iteration"] == 1
    results = json.loads((out / "results.json").read_text())
    assert {"bbox", "bbox_positives", "negatives"} <= set(results)
    assert "Summary [synthetic_test]" in log

    # The config the run saved rebuilds its model, which --eval-only evaluates.
    evaluation = tmp_path / "eval"
    run_python(
        [
            "lazy_train_net.py",
            "--eval-only",
            "--config-file",
            out / "config.yaml",
            "--synthetic",
            synthetic_root,
            f"train.init_checkpoint={out / 'model_final.pth'}",
            f"train.output_dir={evaluation}",
        ],
        timeout=300,
    )
    assert json.loads((evaluation / "results.json").read_text()).keys() == results.keys()


@pytest.mark.parametrize(
    "override, named",
    [
        ("model.roi_heads.ohem_nms_thresh=0", r"HNMROIHeads\(ohem_nms_thresh=0\).*NMS_THRESH"),
        ("model.roi_heads.box_predictor.bg_weight=-1", r"bg_weight=-1\).*ROI_BG_WEIGHT"),
        ("model.proposal_generator.bg_weight=-1", r"HNMRPN\(bg_weight=-1\).*RPN_BG_WEIGHT"),
        ("model.roi_heads.hard_negative_buffer.capacity=0", r"capacity=0\).*BUFFER.CAPACITY"),
    ],
)
def test_bad_constructor_arguments_fail_at_build_time_naming_the_key(override, named):
    # Built without a yacs config, nothing runs validate_hnm_config: the constructors check.
    with pytest.raises(HNMConfigError, match=named):
        instantiate(load_lazy(ALL, [override]).model)


def test_the_negative_share_loader_refuses_a_sampler_of_its_own(synthetic_datasets):
    cfg = load_lazy(BASE, TINY)
    cfg.dataloader.train.sampler = None
    with pytest.raises(ValueError, match="drop sampler=.*negative_fraction -1"):
        instantiate(cfg.dataloader.train)
