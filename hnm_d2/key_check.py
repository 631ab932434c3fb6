"""``check_hnm_keys_are_used``: a MODEL.HNM key that no built class reads is an error.

The MODEL.HNM keys are read by hnm_d2's own classes only. A config that switches a mechanism on
but names a stock class (say ``ROI_HEADS.NAME: CascadeROIHeads``) would train stock detectron2
while the user believes the mechanism is on; this check fails instead, naming the key, the class
the config names and the one that reads the key.

The check runs in the data path (the training mapper and loader) and in the model classes, so it
sits below both and finds the hnm_d2 classes by their registered names, not by importing them.
"""

from typing import Dict, List, Tuple

from detectron2.modeling import META_ARCH_REGISTRY, PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.utils.registry import Registry

from .config import HNMConfigError

__all__ = ["check_hnm_keys_are_used"]


# The hnm_d2 class to name instead of a stock one.
_HNM_VARIANTS = {
    "StandardROIHeads": "HNMROIHeads",
    "CascadeROIHeads": "HNMCascadeROIHeads",
    "RPN": "HNMRPN",
    "GeneralizedRCNN": "HNMRCNN",
}

# How each key reads when its mechanism is off.
_DEFAULTS = {
    "MODEL.HNM.ROI_OHEM.ENABLED": "False",
    "MODEL.HNM.BUFFER.ENABLED": "False",
    "MODEL.HNM.FEATURE_MEMORY.ENABLED": "False",
    "MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED": "False",
    "MODEL.HNM.ROI_BG_WEIGHT": "1.0",
    "MODEL.HNM.ROI_FOCAL.ENABLED": "False",
    "MODEL.HNM.RPN_OHEM.ENABLED": "False",
    "MODEL.HNM.RPN_BG_WEIGHT": "1.0",
}


def _switched_on(cfg) -> Dict[str, List[str]]:
    """The MODEL.HNM keys set away from "off", grouped by the component that reads them.

    Returns:
        dict: "roi_heads", "proposal_generator", "meta_architecture" -> dotted keys.
    """
    hnm = cfg.MODEL.HNM
    readers = {
        "roi_heads": {
            "MODEL.HNM.ROI_OHEM.ENABLED": hnm.ROI_OHEM.ENABLED,
            "MODEL.HNM.BUFFER.ENABLED": hnm.BUFFER.ENABLED,
            "MODEL.HNM.FEATURE_MEMORY.ENABLED": hnm.FEATURE_MEMORY.ENABLED,
            "MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED": hnm.NEGATIVE_IMAGE_LOSS.ENABLED,
            "MODEL.HNM.ROI_BG_WEIGHT": hnm.ROI_BG_WEIGHT != 1.0,
            "MODEL.HNM.ROI_FOCAL.ENABLED": hnm.ROI_FOCAL.ENABLED,
        },
        "proposal_generator": {
            "MODEL.HNM.RPN_OHEM.ENABLED": hnm.RPN_OHEM.ENABLED,
            "MODEL.HNM.RPN_BG_WEIGHT": hnm.RPN_BG_WEIGHT != 1.0,
        },
        # The box buffer needs the batch's image files, which only HNMRCNN hands to the heads.
        "meta_architecture": {"MODEL.HNM.BUFFER.ENABLED": hnm.BUFFER.ENABLED},
    }
    return {part: [k for k, on in keys.items() if on] for part, keys in readers.items()}


def _components(cfg) -> Dict[str, Tuple[str, str, Registry, str]]:
    """part -> (config key naming its class, the name, its registry, registered name of the
    hnm_d2 class that reads the part's MODEL.HNM keys)."""
    return {
        "roi_heads": (
            "MODEL.ROI_HEADS.NAME",
            cfg.MODEL.ROI_HEADS.NAME,
            ROI_HEADS_REGISTRY,
            "HNMROIHeads",
        ),
        "proposal_generator": (
            "MODEL.PROPOSAL_GENERATOR.NAME",
            cfg.MODEL.PROPOSAL_GENERATOR.NAME,
            PROPOSAL_GENERATOR_REGISTRY,
            "HNMRPN",
        ),
        "meta_architecture": (
            "MODEL.META_ARCHITECTURE",
            cfg.MODEL.META_ARCHITECTURE,
            META_ARCH_REGISTRY,
            "HNMRCNN",
        ),
    }


def _reads_hnm_keys(configured, registry: Registry, reader_name: str) -> bool:
    """Whether the class ``configured`` is the registered ``reader_name`` or a subclass of it.

    When ``reader_name`` is not registered (hnm_d2.modeling was not imported), no registered
    class derives from it either: a subclass's module imports its base's, which registers the
    base. So the configured class does not read the keys.
    """
    if reader_name not in registry:
        return False
    return isinstance(configured, type) and issubclass(configured, registry.get(reader_name))


def check_hnm_keys_are_used(cfg) -> None:
    """Raise HNMConfigError when a MODEL.HNM mechanism is on but the class that reads it is not
    built by ``cfg``.

    Called when an hnm_d2 piece is built from a config (a model part, the training mapper or
    the train loader), so a project that uses any of them catches the mismatch. (A project
    that builds none of them never reads the MODEL.HNM keys at all.)

    Raises:
        HNMConfigError: naming the key, the class the config names, and the fix.
    """
    components = _components(cfg)
    for part, keys in _switched_on(cfg).items():
        if not keys:
            continue
        name_key, name, registry, reader_name = components[part]
        try:
            configured = registry.get(name)
        except KeyError:
            continue  # detectron2 itself fails on an unregistered name, with its own message
        if not _reads_hnm_keys(configured, registry, reader_name):
            raise HNMConfigError(
                f"{', '.join(keys)} switched on, but {name_key} = {name!r}, which does not read "
                f"MODEL.HNM keys: the mechanism would silently not run. Either set {name_key} "
                f"to {_variant_of(name, reader_name)}, or set {', '.join(keys)} back to the "
                f"default ({', '.join(_DEFAULTS[k] for k in keys)})."
            )


def _variant_of(name: str, reader_name: str) -> str:
    """How to name the hnm_d2 class that replaces the configured class ``name``."""
    if name in _HNM_VARIANTS:
        return repr(_HNM_VARIANTS[name])
    return f"{reader_name!r} or a subclass of it (hnm_d2 has no variant of {name!r})"
