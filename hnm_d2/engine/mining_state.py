"""What a mining run records to resume safely: the layout of its files, the settings it was
started with (a resume must keep them; the verdicts files it obeyed are added as they come), how
its files are read back (:func:`read_json`, with :class:`MiningStateError` for one that cannot be
used; :func:`read_choices` for the images mining chose), and the main process's view of them.

Distributed: every decision read from a file is the main process's, broadcast to the others.
"""

import datetime
import hashlib
import json
import os
import re

from detectron2.utils import comm

from ..utils.atomic import strict_json_value, write_json_atomically

__all__ = [
    "MiningStateError",
    "read_json",
    "MiningLayout",
    "mining_settings",
    "check_settings",
    "start_or_resume",
    "record_verdicts_file",
    "read_choices",
    "main_process_value",
    "read_on_main_process",
]


class MiningStateError(RuntimeError):
    """A file under OUTPUT_DIR/mining that cannot be used to resume."""


def read_json(path):
    """The content of a JSON file written by :func:`write_json_atomically`, or None if absent.

    Raises:
        MiningStateError: the file exists but is not valid JSON.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MiningStateError(
            f"{path} is not valid JSON ({e}). It was not written by hnm_d2.mine, or was edited: "
            "delete it to redo the step it records, then run the same command again."
        ) from e


class MiningLayout:
    """The paths of the mining loop's files under ``OUTPUT_DIR/mining``."""

    def __init__(self, output_dir):
        self.root = os.path.join(output_dir, "mining")
        self.settings = os.path.join(self.root, "settings.json")
        self.report = os.path.join(self.root, "report.json")
        self.curves = os.path.join(self.root, "curves.png")
        self.review_page = os.path.join(self.root, "review.html")
        self.review_dir = os.path.join(self.root, "review")  # the page's thumbnails
        # The verdicts mining obeys: every verdicts file given so far, merged.
        self.applied_verdicts = os.path.join(self.root, "verdicts_applied.json")
        self.to_annotate = os.path.join(self.root, "to_annotate.json")

    def round_dir(self, k):
        return os.path.join(self.root, f"round_{k}")

    def final_weights(self, k):
        return os.path.join(self.round_dir(k), "model_final.pth")

    def summary(self, k):
        return os.path.join(self.root, f"round_{k}.json")

    def selection(self, k):
        return os.path.join(self.root, f"round_{k}_selection.json")

    def mined_plot(self, k):
        return os.path.join(self.root, f"round_{k}_mined.png")

    def step(self, k):
        """Online mining step k's choice."""
        return os.path.join(self.root, f"step_{k}.json")

    def step_plot(self, k):
        return os.path.join(self.root, f"step_{k}_mined.png")


# The files that record which pool images mining chose, by kind: a round's selection, an
# online step.
_CHOICE_FILES = {
    "round": re.compile(r"round_(\d+)_selection\.json"),
    "step": re.compile(r"step_(\d+)\.json"),
}


def read_choices(layout):
    """Every choice of the run in ``layout``: the rounds' selections or the online steps.

    Returns:
        list[dict]: in round (step) order, each "kind" ("round" or "step"), "number", "file"
        and "choice" (the file's content: "images", hardest first, each with "file_name",
        "score" and "detections"; and "thing_classes" since hnm_d2 writes it).
    """
    if not os.path.isdir(layout.root):
        return []
    found = []
    for name in os.listdir(layout.root):
        for kind, pattern in _CHOICE_FILES.items():
            match = pattern.fullmatch(name)
            if match:
                found.append((kind, int(match.group(1)), os.path.join(layout.root, name)))
    return [
        {"kind": kind, "number": number, "file": path, "choice": read_json(path)}
        for kind, number, path in sorted(found)
    ]


# The config keys that shape what each round trains and chooses, as key prefixes (SEED: the
# initial weights and the data order).
_RECORDED_KEY_PREFIXES = ("MODEL.", "INPUT.", "SOLVER.", "DATALOADER.", "HNM.DATA.", "SEED")
# Keys of those nodes that a resume may change: they do not change what a round learns. The base
# MODEL.WEIGHTS is recorded: it initialises round 0 (and every round with FROM_SCRATCH); the
# weights of a warm-started round are the previous round's, set by the loop, not read from it.
_UNRECORDED_CONFIG_KEYS = frozenset(
    {
        "MODEL.DEVICE",  # a resume may run on other hardware
        # The stop message of a pool without detections invites lowering it and resuming.
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "SOLVER.CHECKPOINT_PERIOD",  # how often progress is saved
        "DATALOADER.NUM_WORKERS",  # how fast images are loaded
    }
)


def _flat_config(node, prefix=""):
    """The leaf keys of a config node by dotted name ("MODEL.HNM.ROI_OHEM.ENABLED")."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def mining_settings(cfg):
    """The settings that decide what each round chooses and trains: a resume must keep them.

    Returns:
        dict: the mining settings ("pool", "train_datasets", "per_round",
        "iterations_per_round", "from_scratch", "online"), HNM.MINING.SELECTION, SEED, and every
        config key of the MODEL, INPUT, SOLVER, DATALOADER and HNM.DATA nodes by dotted name,
        but the few a resume may change (MODEL.DEVICE, ...). Values are as settings.json holds
        them (a tuple is a list, a non-finite float null), so a value read back equals the same
        value of a config.
    """
    settings = {
        "pool": list(cfg.HNM.MINING.POOL),
        "train_datasets": list(cfg.DATASETS.TRAIN),
        "per_round": cfg.HNM.MINING.PER_ROUND,
        "iterations_per_round": cfg.HNM.MINING.ITERS_PER_ROUND or cfg.SOLVER.MAX_ITER,
        "from_scratch": cfg.HNM.MINING.FROM_SCRATCH,
        "online": cfg.HNM.MINING.ONLINE,
        # A resume must not switch between mining and the random control.
        "HNM.MINING.SELECTION": cfg.HNM.MINING.SELECTION,
    }
    for key, value in _flat_config(cfg).items():
        if key.startswith(_RECORDED_KEY_PREFIXES) and key not in _UNRECORDED_CONFIG_KEYS:
            settings[key] = value
    return strict_json_value(settings)


# Settings recorded since a later version, and the value a run recorded before it had.
_RECORDED_SINCE = {
    "online": False,  # online mining came after the rounds
    "HNM.MINING.SELECTION": "hardest",  # random selection, the control, came after mining
}


def check_settings(recorded, settings, settings_file):
    """Raise MiningStateError naming the first setting that differs from the recorded run.

    A setting that ``recorded`` lacks is not checked: settings files of older versions record
    fewer settings, and resuming from them keeps working.
    """
    for key, value in settings.items():
        if key not in recorded and key in _RECORDED_SINCE:
            recorded = {**recorded, key: _RECORDED_SINCE[key]}
        if key in recorded and recorded[key] != value:
            raise MiningStateError(
                f"{settings_file} records {key} = {recorded[key]!r}, but this run has {value!r}: "
                "the rounds already in that folder were mined with the recorded value. Run again "
                "with it to resume, or give a new OUTPUT_DIR to start over."
            )


def main_process_value(value):
    """The main process's ``value`` on every process (the others pass None)."""
    return comm.all_gather(value)[0]


def read_on_main_process(path):
    return main_process_value(read_json(path) if comm.is_main_process() else None)


def start_or_resume(layout, settings, logger):
    """Record ``settings`` in a new run's folder, or check them against a resumed run's.

    Raises:
        MiningStateError: a setting differs from the one the folder's run recorded.
    """
    recorded = read_on_main_process(layout.settings)
    if recorded is not None:
        check_settings(recorded, settings, layout.settings)
        logger.info("Resuming the mining run in %s.", layout.root)
    elif comm.is_main_process():
        write_json_atomically(layout.settings, settings)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def record_verdicts_file(layout, path, counts):
    """Add a verdicts file to settings.json's "verdicts_files", unless it is the last one there.

    Unlike the settings above, the verdicts may change from one resume to the next (a person
    judges the images of each round as they come); settings.json keeps each file given, in
    order, with its checksum and what it judged, so the folder says what every later round
    obeyed. Main process only.

    Args:
        path (str): the verdicts file given to this run.
        counts (dict): verdict -> images the file judges so.
    """
    settings = read_json(layout.settings)
    recorded = settings.setdefault("verdicts_files", [])
    entry = {"file": os.path.abspath(path), "sha256": _sha256(path), "verdicts": counts}
    if recorded and {k: recorded[-1].get(k) for k in entry} == entry:
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    recorded.append({**entry, "given_at": now.isoformat(timespec="seconds")})
    write_json_atomically(layout.settings, settings)
