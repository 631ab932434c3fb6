"""Config keys of hnm_d2: ``add_hnm_config(cfg)`` and their validation.

Every key defaults to "off": a config with these keys at their defaults builds exactly what
stock detectron2 builds and trains with the same losses. Values are validated when the model
or data loader is built (``validate_hnm_config``), so a bad value fails before training starts
with a message that names the key, the value and the allowed range.
"""

import math

from detectron2.config import CfgNode as CN

__all__ = [
    "add_hnm_config",
    "validate_hnm_config",
    "check_arguments",
    "HNMConfigError",
    "MINING_SELECTIONS",
]

# HNM.MINING.SELECTION's values: mining's own choice, and the control it is measured against.
MINING_SELECTIONS = ("hardest", "random")


class HNMConfigError(ValueError):
    """A config value outside its allowed range."""


def add_hnm_config(cfg):
    """Add the hnm_d2 keys to ``cfg`` in place (never to detectron2's global defaults)."""
    _add_model_keys(cfg)
    _register_renamed_keys(cfg)
    _add_data_keys(cfg)
    _add_eval_keys(cfg)
    _add_mining_keys(cfg)
    return cfg


def _add_model_keys(cfg):
    cfg.MODEL.HNM = CN()

    # OHEM over RoIs (Shrivastava et al. 2016): rank all proposals by loss in a read-only
    # pass, suppress overlapping ones by NMS over the loss ranking, train on the top-B.
    cfg.MODEL.HNM.ROI_OHEM = CN()
    cfg.MODEL.HNM.ROI_OHEM.ENABLED = False
    # B per image; 0 means MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE.
    cfg.MODEL.HNM.ROI_OHEM.BATCH_SIZE_PER_IMAGE = 0
    # IoU above which a lower-loss RoI is suppressed by a higher-loss one; 1.0 = no NMS.
    cfg.MODEL.HNM.ROI_OHEM.NMS_THRESH = 0.7
    # Share of the B slots reserved for the hardest positives (0 = pure loss ranking).
    cfg.MODEL.HNM.ROI_OHEM.MIN_POSITIVE_FRACTION = 0.0

    # OHEM over RPN anchors: the hardest negatives by objectness loss replace random ones.
    cfg.MODEL.HNM.RPN_OHEM = CN()
    cfg.MODEL.HNM.RPN_OHEM.ENABLED = False
    # At most this many negatives per positive anchor of an image; 0 = no cap, negatives fill
    # the rest of MODEL.RPN.BATCH_SIZE_PER_IMAGE.
    cfg.MODEL.HNM.RPN_OHEM.NEG_POS_RATIO = 0.0
    # ... but at least this many per image: a negative image (no positive anchor) must still
    # train the RPN on its hardest background.
    cfg.MODEL.HNM.RPN_OHEM.MIN_NEGATIVES = 64

    # Hard-negative buffer: background boxes the model scored high, kept per image file (its
    # identity across datasets) in original image coordinates, and re-injected as background
    # proposals when the image comes back (about once per epoch).
    cfg.MODEL.HNM.BUFFER = CN()
    cfg.MODEL.HNM.BUFFER.ENABLED = False
    # A background RoI is stored when its score is >= this: its highest object-class
    # probability, the scale of MODEL.ROI_HEADS.SCORE_THRESH_TEST (a detection at inference).
    cfg.MODEL.HNM.BUFFER.SCORE_THRESH = 0.5
    # Iterations before the first box is recorded: an untrained box head scores every box about
    # alike, and the buffer would fill with arbitrary boxes. Short schedules set it lower.
    cfg.MODEL.HNM.BUFFER.WARMUP_ITERS = 1000
    cfg.MODEL.HNM.BUFFER.PER_IMAGE = 16  # boxes kept per image (lowest score evicted)
    cfg.MODEL.HNM.BUFFER.CAPACITY = 4096  # boxes kept in total per process
    # Each visit of an image replaces its entries by the visit's hard boxes (its earlier
    # entries re-scored among them); an image not visited for this many iterations is dropped.
    cfg.MODEL.HNM.BUFFER.MAX_AGE = 1000
    # Share of an image's background quota guaranteed to its buffered boxes.
    cfg.MODEL.HNM.BUFFER.BG_SHARE = 0.25
    # Boxes with IoU above this with a better-scored buffered box of the same image are
    # merged into it, so near-copies do not fill the per-image slots.
    cfg.MODEL.HNM.BUFFER.DEDUP_IOU = 0.7
    # A background RoI overlapping an object by this IoU or more is never stored: boxes just
    # below the matcher's threshold are mislocalised detections of real objects, not false
    # alarms (what the buffer stored without it: docs/BENCHMARKS.md).
    cfg.MODEL.HNM.BUFFER.MAX_OBJECT_IOU = 0.3

    # Feature memory: a cross-batch memory of the hard negatives' pooled RoI features, re-fed to
    # the box head as background in the following iterations, whatever images they came from
    # (XBM, Wang et al. 2020). The box buffer instead brings boxes back with their image (about
    # once per epoch). One of the two at a time.
    cfg.MODEL.HNM.FEATURE_MEMORY = CN()
    cfg.MODEL.HNM.FEATURE_MEMORY.ENABLED = False
    # Memory entries re-fed per iteration (for the whole batch).
    cfg.MODEL.HNM.FEATURE_MEMORY.PER_ITER = 64
    # A background RoI is stored when its score is >= this: its highest object-class
    # probability, the scale of MODEL.ROI_HEADS.SCORE_THRESH_TEST (a detection at inference).
    cfg.MODEL.HNM.FEATURE_MEMORY.SCORE_THRESH = 0.5
    # Iterations before the first entry is recorded: an untrained box head scores every box
    # about alike. Short schedules set it lower.
    cfg.MODEL.HNM.FEATURE_MEMORY.WARMUP_ITERS = 1000
    cfg.MODEL.HNM.FEATURE_MEMORY.CAPACITY = 4096  # entries kept; the oldest leave first
    # Iterations an entry is kept: its features were pooled by the backbone of that iteration.
    cfg.MODEL.HNM.FEATURE_MEMORY.MAX_AGE = 1000
    # A background RoI overlapping an object by this IoU or more is never stored.
    cfg.MODEL.HNM.FEATURE_MEMORY.MAX_OBJECT_IOU = 0.3

    # Background down-weighting: the background terms of the RoI classification loss and of
    # the RPN objectness loss are multiplied by these; 1.0 = stock loss, exactly.
    cfg.MODEL.HNM.ROI_BG_WEIGHT = 1.0
    cfg.MODEL.HNM.RPN_BG_WEIGHT = 1.0

    # A loss aimed at false alarms per negative image at a matched recall, which each negative
    # image's few highest-scoring boxes decide (the stock loss averages over sampled RoIs, most
    # of them easy): for each training image without objects, every proposal is scored by the
    # box head (its highest object-class probability), and the TOP_K highest add
    # WEIGHT * (their mean cross-entropy toward background) as the loss term loss_neg_topk.
    cfg.MODEL.HNM.NEGATIVE_IMAGE_LOSS = CN()
    cfg.MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED = False
    cfg.MODEL.HNM.NEGATIVE_IMAGE_LOSS.TOP_K = 8  # proposals per negative image
    cfg.MODEL.HNM.NEGATIVE_IMAGE_LOSS.WEIGHT = 1.0

    # Softmax focal loss for the RoI classifier; GAMMA 0 is plain cross-entropy.
    cfg.MODEL.HNM.ROI_FOCAL = CN()
    cfg.MODEL.HNM.ROI_FOCAL.ENABLED = False
    cfg.MODEL.HNM.ROI_FOCAL.GAMMA = 2.0


def _add_data_keys(cfg):
    cfg.HNM = CN()
    cfg.HNM.DATA = CN()
    # What the mapper does with an invalid annotation (zero/negative area, NaN/inf, outside
    # the image, unknown category): "error" raises naming file, image id, index and values;
    # "drop" removes it, logs a warning naming it and counts it in EventStorage.
    cfg.HNM.DATA.INVALID_ANNOTATIONS = "error"
    # Share of negative (annotation-free) images in each training batch, drawn by
    # NegativeShareTrainingSampler; -1 = the dataset's natural share (stock sampler).
    cfg.HNM.DATA.NEGATIVE_FRACTION = -1.0


def _add_eval_keys(cfg):
    cfg.HNM.EVAL = CN()
    # Score thresholds at which NegativeImageEvaluator counts false alarms.
    cfg.HNM.EVAL.SCORE_THRESHOLDS = [0.05, 0.3, 0.5, 0.7]
    # Recall levels (on the positive images) at which false alarms per negative image are
    # reported: the threshold that finds that share of the objects, then its false alarms.
    cfg.HNM.EVAL.RECALLS = [0.8, 0.9]
    # IoU at which a detection finds an object, for those recall levels and MR^-2.
    cfg.HNM.EVAL.MATCH_IOU = 0.5


def _add_mining_keys(cfg):
    # Image-level mining loop (python -m hnm_d2.mine); command-line flags override these.
    cfg.HNM.MINING = CN()
    cfg.HNM.MINING.POOL = ()  # registered datasets of negative candidate images
    cfg.HNM.MINING.ROUNDS = 0
    # Images added per round: >= 1 is a count, in (0, 1) a fraction of the training set.
    cfg.HNM.MINING.PER_ROUND = 0.15
    cfg.HNM.MINING.ITERS_PER_ROUND = 0  # 0 = SOLVER.MAX_ITER
    cfg.HNM.MINING.FROM_SCRATCH = False  # False = warm start from the previous round
    cfg.HNM.MINING.SCORE_BATCH_SIZE = 4  # images per forward pass when scoring the pool
    # Which scored pool images a round (step) adds: "hardest", the highest-scored (mining);
    # "random", as many drawn uniformly from the same candidates (those with a detection), with
    # a generator seeded from SEED and the round (step): the control that tells whether
    # choosing by score beats chance.
    cfg.HNM.MINING.SELECTION = "hardest"
    # Online mining: one run of SOLVER.MAX_ITER iterations in which ROUNDS mining steps, one
    # every MINE_EVERY iterations (0 = MAX_ITER // (ROUNDS + 1)), each move PER_ROUND pool
    # images into the training stream; no restarts (ITERS_PER_ROUND, FROM_SCRATCH unused).
    cfg.HNM.MINING.ONLINE = False
    cfg.HNM.MINING.MINE_EVERY = 0
    # A person's verdicts on the mined images (verdicts.json, exported by mining/review.html):
    # images judged to hold an object, or unsure, leave training; detections judged false alarms
    # go with their image as "negative_boxes"; "" = none given this run
    # (those given before, kept in mining/verdicts_applied.json, are still obeyed).
    cfg.HNM.MINING.VERDICTS = ""


# Keys that no longer exist -> (the key that replaced it, how to move a config over). yacs refuses
# them in merge_from_file and merge_from_list with this message; validate_hnm_config refuses one
# set on a config by assignment.
_RENAMED_KEYS = {
    "MODEL.HNM.BUFFER.MODE": (
        "MODEL.HNM.FEATURE_MEMORY.ENABLED",
        "MODE 'features' is MODEL.HNM.FEATURE_MEMORY.ENABLED True, with the BUFFER keys it read "
        "(CAPACITY, MAX_AGE, SCORE_THRESH, WARMUP_ITERS, MAX_OBJECT_IOU) and FEATURES_PER_ITER "
        "(as PER_ITER) under MODEL.HNM.FEATURE_MEMORY; MODE 'boxes' is MODEL.HNM.BUFFER.ENABLED "
        "alone: delete the line.",
    ),
    "MODEL.HNM.BUFFER.FEATURES_PER_ITER": (
        "MODEL.HNM.FEATURE_MEMORY.PER_ITER",
        "the feature memory's keys are under MODEL.HNM.FEATURE_MEMORY (ENABLED True switches it "
        "on).",
    ),
}


def _register_renamed_keys(cfg):
    for old, (new, how) in _RENAMED_KEYS.items():
        if not cfg.key_is_renamed(old):  # add_hnm_config may run twice on one config
            cfg.register_renamed_key(old, new, how)


_RANGES = {
    # key: (check, allowed range in words)
    "MODEL.HNM.ROI_OHEM.BATCH_SIZE_PER_IMAGE": (lambda v: v >= 0, "an integer >= 0"),
    "MODEL.HNM.ROI_OHEM.NMS_THRESH": (lambda v: 0 < v <= 1, "(0, 1]"),
    "MODEL.HNM.ROI_OHEM.MIN_POSITIVE_FRACTION": (lambda v: 0 <= v <= 1, "[0, 1]"),
    "MODEL.HNM.RPN_OHEM.NEG_POS_RATIO": (lambda v: v >= 0, ">= 0"),
    # 0 would leave a negative image no RPN loss at all under a NEG_POS_RATIO cap.
    "MODEL.HNM.RPN_OHEM.MIN_NEGATIVES": (lambda v: v >= 1, "an integer >= 1"),
    "MODEL.HNM.BUFFER.SCORE_THRESH": (lambda v: 0 <= v <= 1, "[0, 1]"),
    "MODEL.HNM.BUFFER.PER_IMAGE": (lambda v: v >= 1, "an integer >= 1"),
    "MODEL.HNM.BUFFER.CAPACITY": (lambda v: v >= 1, "an integer >= 1"),
    "MODEL.HNM.BUFFER.MAX_AGE": (lambda v: v >= 1, "an integer >= 1"),
    "MODEL.HNM.BUFFER.WARMUP_ITERS": (lambda v: v >= 0, "an integer >= 0"),
    "MODEL.HNM.BUFFER.BG_SHARE": (lambda v: 0 <= v <= 1, "[0, 1]"),
    "MODEL.HNM.BUFFER.DEDUP_IOU": (lambda v: 0 < v <= 1, "(0, 1]"),
    "MODEL.HNM.BUFFER.MAX_OBJECT_IOU": (lambda v: 0 < v <= 1, "(0, 1]"),
    "MODEL.HNM.FEATURE_MEMORY.PER_ITER": (lambda v: v >= 1, "an integer >= 1"),
    "MODEL.HNM.FEATURE_MEMORY.SCORE_THRESH": (lambda v: 0 <= v <= 1, "[0, 1]"),
    "MODEL.HNM.FEATURE_MEMORY.WARMUP_ITERS": (lambda v: v >= 0, "an integer >= 0"),
    "MODEL.HNM.FEATURE_MEMORY.CAPACITY": (lambda v: v >= 1, "an integer >= 1"),
    "MODEL.HNM.FEATURE_MEMORY.MAX_AGE": (lambda v: v >= 1, "an integer >= 1"),
    "MODEL.HNM.FEATURE_MEMORY.MAX_OBJECT_IOU": (lambda v: 0 < v <= 1, "(0, 1]"),
    "MODEL.HNM.NEGATIVE_IMAGE_LOSS.TOP_K": (lambda v: v >= 1, "an integer >= 1"),
    "MODEL.HNM.NEGATIVE_IMAGE_LOSS.WEIGHT": (
        lambda v: v > 0,
        "> 0 (to switch the loss off, set MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED False)",
    ),
    "MODEL.HNM.ROI_BG_WEIGHT": (lambda v: v >= 0, ">= 0"),
    "MODEL.HNM.RPN_BG_WEIGHT": (lambda v: v >= 0, ">= 0"),
    "MODEL.HNM.ROI_FOCAL.GAMMA": (lambda v: v >= 0, ">= 0"),
    "HNM.DATA.INVALID_ANNOTATIONS": (lambda v: v in ("error", "drop"), "'error' or 'drop'"),
    "HNM.DATA.NEGATIVE_FRACTION": (lambda v: v == -1 or 0 <= v <= 1, "-1 (natural) or [0, 1]"),
    "HNM.EVAL.SCORE_THRESHOLDS": (
        lambda v: len(v) > 0 and all(0 <= t <= 1 for t in v),
        "a non-empty list of scores in [0, 1]",
    ),
    "HNM.EVAL.RECALLS": (
        lambda v: len(v) > 0 and all(0 < r <= 1 for r in v),
        "a non-empty list of recall levels in (0, 1]",
    ),
    "HNM.EVAL.MATCH_IOU": (lambda v: 0 < v <= 1, "(0, 1]"),
    "HNM.MINING.ROUNDS": (lambda v: v >= 0, "an integer >= 0"),
    "HNM.MINING.PER_ROUND": (lambda v: v > 0, "> 0 (a count >= 1 or a fraction in (0, 1))"),
    "HNM.MINING.ITERS_PER_ROUND": (lambda v: v >= 0, "an integer >= 0"),
    "HNM.MINING.SCORE_BATCH_SIZE": (lambda v: v >= 1, "an integer >= 1"),
    "HNM.MINING.SELECTION": (
        lambda v: v in MINING_SELECTIONS,
        " or ".join(repr(v) for v in MINING_SELECTIONS),
    ),
    "HNM.MINING.MINE_EVERY": (lambda v: v >= 0, "an integer >= 0"),
}


def _lookup(cfg, dotted_key):
    node = cfg
    for part in dotted_key.split("."):
        node = node[part]
    return node


def _has_key(cfg, dotted_key):
    try:
        _lookup(cfg, dotted_key)
    except KeyError:
        return False
    return True


def _is_finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_hnm_config(cfg, prefix=""):
    """Check the hnm_d2 keys under ``prefix`` ("" = all); raise HNMConfigError on a bad one.

    Called from the ``from_config`` of the classes that read the keys, so a bad value fails
    when the model or loader is built, not hours into training.
    """
    _refuse_renamed_keys(cfg, prefix)
    for key, (check, allowed) in _RANGES.items():
        if not key.startswith(prefix):
            continue
        try:
            value = _lookup(cfg, key)
        except KeyError:
            raise HNMConfigError(
                f"Config key {key} is missing: call hnm_d2.add_hnm_config(cfg) before "
                "merge_from_file, so the hnm_d2 keys exist."
            ) from None
        numeric = not isinstance(value, (str, list, tuple))
        if (numeric and not _is_finite_number(value)) or not check(value):
            raise HNMConfigError(f"{key} = {value!r} is invalid: allowed is {allowed}.")
    _refuse_buffer_with_memory(cfg, prefix)


def _refuse_renamed_keys(cfg, prefix):
    """Raise on a key of :data:`_RENAMED_KEYS` under ``prefix`` that the config holds (set by
    assignment: merging a config file or list already refuses it)."""
    for old, (new, how) in _RENAMED_KEYS.items():
        if old.startswith(prefix) and _has_key(cfg, old):
            raise HNMConfigError(f"Config key {old} was replaced by {new}. Note: {how}")


def _refuse_buffer_with_memory(cfg, prefix):
    """The heads store hard negatives as boxes or as pooled features, not both: both share the
    heads' hard_negative_max_iou, and the mode they replace was one or the other."""
    keys = ("MODEL.HNM.BUFFER.ENABLED", "MODEL.HNM.FEATURE_MEMORY.ENABLED")
    if keys[0].startswith(prefix) and all(_lookup(cfg, key) for key in keys):
        raise HNMConfigError(
            f"{keys[0]} and {keys[1]} are both True: the ROI heads keep hard negatives either as "
            "boxes that come back with their image (the buffer) or as pooled features re-fed at "
            "every iteration (the feature memory), one at a time. Set one of them False."
        )


def check_arguments(owner: str, arguments: dict) -> None:
    """Check constructor arguments against the ranges of the config keys they stand for.

    A part built without a config (LazyConfig's ``instantiate``) never runs
    :func:`validate_hnm_config`; this makes its bad values fail at build time too, naming the
    argument and the key.

    Args:
        owner (str): the class the arguments are given to, for the message.
        arguments (dict): config key -> (argument name, value); a None value is not checked.
    """
    for key, (name, value) in arguments.items():
        check, allowed = _RANGES[key]
        numeric = not isinstance(value, (str, list, tuple))
        if value is not None and ((numeric and not _is_finite_number(value)) or not check(value)):
            raise HNMConfigError(
                f"{owner}({name}={value!r}) is invalid: allowed is {allowed} (the config key "
                f"{key})."
            )
