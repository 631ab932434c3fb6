"""check_hnm_keys_are_used finds the hnm_d2 classes by their registered names: a configured class
reads the MODEL.HNM keys when it is the registered hnm_d2 class or a subclass of it."""

import pytest
from detectron2.config import get_cfg
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY

import hnm_d2
from hnm_d2.config import HNMConfigError
from hnm_d2.key_check import check_hnm_keys_are_used
from hnm_d2.modeling import HNMROIHeads


@ROI_HEADS_REGISTRY.register()
class ProjectHeadsOnHNM(HNMROIHeads):
    """A project's heads built on hnm_d2's: they read the MODEL.HNM keys."""


def cfg_with(**options):
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "HNMRCNN"
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "HNMRPN"
    for key, value in options.items():
        cfg.merge_from_list([key, value])
    return cfg


@pytest.mark.parametrize("heads", ["HNMROIHeads", "HNMCascadeROIHeads", "ProjectHeadsOnHNM"])
def test_the_registered_class_and_its_subclasses_read_the_keys(heads):
    check_hnm_keys_are_used(
        cfg_with(**{"MODEL.ROI_HEADS.NAME": heads, "MODEL.HNM.ROI_OHEM.ENABLED": True})
    )


def test_a_stock_class_is_refused_naming_the_variant():
    cfg = cfg_with(**{"MODEL.ROI_HEADS.NAME": "StandardROIHeads", "MODEL.HNM.ROI_BG_WEIGHT": 0.5})
    with pytest.raises(HNMConfigError, match="ROI_HEADS.NAME = 'StandardROIHeads'.*'HNMROIHeads'"):
        check_hnm_keys_are_used(cfg)


def test_without_the_hnm_class_registered_no_configured_class_reads_the_keys(monkeypatch):
    # As if hnm_d2.modeling had not been imported: its names are absent from the registry.
    monkeypatch.delitem(ROI_HEADS_REGISTRY._obj_map, "HNMROIHeads")
    cfg = cfg_with(**{"MODEL.ROI_HEADS.NAME": "StandardROIHeads", "MODEL.HNM.BUFFER.ENABLED": True})
    with pytest.raises(HNMConfigError, match="ROI_HEADS.NAME = 'StandardROIHeads'"):
        check_hnm_keys_are_used(cfg)


def test_an_unregistered_name_is_left_to_detectron2():
    cfg = cfg_with(**{"MODEL.ROI_HEADS.NAME": "NoSuchHeads", "MODEL.HNM.ROI_OHEM.ENABLED": True})
    check_hnm_keys_are_used(cfg)  # build_model raises detectron2's own "No object named" error
