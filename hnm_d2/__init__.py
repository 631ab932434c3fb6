"""hnm_d2: hard negative mining for detectron2's two-stage detectors.

Importing this package registers HNMRCNN (META_ARCH), HNMRPN (PROPOSAL_GENERATOR), and
HNMROIHeads and HNMCascadeROIHeads (ROI_HEADS) with detectron2's registries;
``add_hnm_config(cfg)`` adds the keys that switch the mechanisms on, all off by default.
"""

from .config import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .evaluation import *  # noqa: F401,F403
from .modeling import *  # noqa: F401,F403

__version__ = "0.1.0"
