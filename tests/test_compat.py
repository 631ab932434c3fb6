"""What hnm_d2 relies on in detectron2 beyond its public API, checked on the detectron2 the suite
runs against (`make test-upstream` runs it against upstream checkouts): hnm_d2.compat's
bridges to 0.6, and the private names it overrides, calls or reads. A failure here names the
upstream change that broke the assumption; the README's compatibility section lists them."""

import argparse
import inspect
import logging

import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.engine import DefaultTrainer, create_ddp_model, defaults
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.proposal_generator import RPN
from detectron2.modeling.roi_heads import CascadeROIHeads, FastRCNNOutputLayers, StandardROIHeads
from detectron2.utils import events
from detectron2.utils.events import EventStorage

from hnm_d2.compat import build_batched_test_loader, has_event_storage, uses_sigmoid_ce
from hnm_d2.engine import launcher

# (class, private method, its parameters, a classmethod?): what hnm_d2 overrides and calls
# through super() or self. Each one's use is given in the README's compatibility section.
PRIVATE_METHODS = [
    (DatasetMapper, "_transform_annotations", ["dataset_dict", "transforms", "image_shape"], 0),
    (StandardROIHeads, "_init_box_head", ["cfg", "input_shape"], 1),
    (StandardROIHeads, "_forward_box", ["features", "proposals"], 0),
    (StandardROIHeads, "_forward_mask", ["features", "instances"], 0),
    (CascadeROIHeads, "_init_box_head", ["cfg", "input_shape"], 1),
    (CascadeROIHeads, "_forward_box", ["features", "proposals", "targets"], 0),
    (CascadeROIHeads, "_run_stage", ["features", "proposals", "stage"], 0),
    (CascadeROIHeads, "_create_proposals_from_boxes", ["boxes", "image_sizes"], 0),
    (CascadeROIHeads, "_match_and_label_boxes", ["proposals", "stage", "targets"], 0),
    (RPN, "_subsample_labels", ["label"], 0),
    (DetectionCheckpointer, "_load_file", ["filename"], 0),
    (DetectionCheckpointer, "_load_model", ["checkpoint"], 0),
]


@pytest.mark.parametrize(
    "cls, name, parameters, is_classmethod",
    PRIVATE_METHODS,
    ids=[f"{cls.__name__}.{name}" for cls, name, *_ in PRIVATE_METHODS],
)
def test_private_methods_hnm_d2_overrides_keep_their_shape(cls, name, parameters, is_classmethod):
    method = inspect.getattr_static(cls, name, None)
    assert method is not None, f"detectron2's {cls.__name__} no longer has {name}"
    assert isinstance(method, classmethod) == bool(is_classmethod)
    # Bound to the class: the parameters after self (an instance method) or cls.
    found = list(inspect.signature(getattr(cls, name)).parameters)
    assert found[int(not is_classmethod) :] == parameters


def test_default_trainer_keeps_the_last_evaluation_results_where_hnm_trainer_reads_them():
    # HNMTrainer.train returns them; DefaultTrainer.train returns them only with
    # TEST.EXPECTED_RESULTS set. The hook that evaluates stores them.
    assert "self._last_eval_results = self.test(" in inspect.getsource(DefaultTrainer)


def test_default_trainer_builds_ddp_through_the_name_hnm_trainer_swaps_on_the_cpu():
    # hnm_d2.engine.ddp patches detectron2.engine.defaults.create_ddp_model for the duration of
    # DefaultTrainer.__init__ (test_distributed trains through it where launch runs CPU
    # processes).
    assert defaults.create_ddp_model is create_ddp_model
    assert "create_ddp_model(" in inspect.getsource(DefaultTrainer.__init__)


def test_has_event_storage_is_true_inside_an_event_storage_only():
    assert not has_event_storage()
    with EventStorage():
        assert has_event_storage()
    assert not has_event_storage()


def test_has_event_storage_without_detectron2s_function_reads_the_storage_stack(monkeypatch):
    # What detectron2 0.6, which lacks the function, goes through.
    monkeypatch.delattr(events, "has_event_storage", raising=False)
    assert not has_event_storage()
    with EventStorage():
        assert has_event_storage()
    assert not has_event_storage()


def box_predictor(**kwargs):
    return FastRCNNOutputLayers(
        ShapeSpec(channels=8),
        box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=2,
        **kwargs,
    )


def test_uses_sigmoid_ce_is_false_for_a_softmax_box_predictor():
    assert uses_sigmoid_ce(box_predictor()) is False


def test_uses_sigmoid_ce_reads_the_option_where_detectron2_has_it():
    # After 0.6 the option is a constructor argument kept as use_sigmoid_ce; 0.6 has neither.
    has_option = "use_sigmoid_ce" in inspect.signature(FastRCNNOutputLayers.__init__).parameters
    if has_option:
        assert uses_sigmoid_ce(box_predictor(use_sigmoid_ce=True)) is True
    else:
        assert not hasattr(box_predictor(), "use_sigmoid_ce")


def test_batched_test_loader_batches_where_detectron2_can_and_says_so_where_it_cannot(caplog):
    can_batch = "batch_size" in inspect.signature(build_detection_test_loader).parameters
    with caplog.at_level(logging.WARNING, logger="hnm_d2.compat"):
        loader = build_batched_test_loader(
            [{"i": i} for i in range(3)], mapper=lambda d: d, batch_size=2, num_workers=0
        )
        batches = [[d["i"] for d in batch] for batch in loader]
    assert batches == ([[0, 1], [2]] if can_batch else [[0], [1], [2]])
    assert ("Batches of 1 image, not 2" in caplog.text) != can_batch


def test_several_cpu_processes_on_a_launch_that_cannot_start_them_fail_naming_the_fix(
    monkeypatch,
):
    monkeypatch.setattr(launcher, "launch_runs_cpu_processes", lambda: False)
    monkeypatch.setattr(launcher.torch.cuda, "is_available", lambda: False)
    args = argparse.Namespace(num_gpus=2, num_machines=1, machine_rank=0, dist_url="auto")
    with pytest.raises(RuntimeError, match="--num-gpus 2 on a machine without CUDA.*--num-gpus 1"):
        launcher.launch_with_args(print, args)
