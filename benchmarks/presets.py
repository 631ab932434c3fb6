"""Where the accuracy benchmark's data comes from: per dataset, the registration flags of its
training and test sets, and which source a test image comes from.

- ``bccd``: BCCD (VOC), class Platelets, in its official splits: with ``--split val`` train on
  train and test on val; with ``--split test`` train on trainval and test on test.
- ``txl_pbc``: TXL-PBC (YOLO), class Platelets. Settings are chosen on a fixed 20% of the
  official train split, drawn per source and per kind of image (with or without a platelet):
  ``--split val`` trains on the other 80% and tests on that 20%; ``--split test`` trains on all
  of the official train split and tests on the official val and test splits together. The
  image lists are written to the output directory (ultralytics' list-file splits).
- ``custom``: any pair given as ``--train FORMAT ARGS...`` and ``--test FORMAT ARGS...``, with
  FORMAT one of ``coco JSON IMAGES``, ``voc ROOT SPLIT CLASSES``, ``yolo ROOT SPLIT CLASSES``.
"""

import random
from collections import defaultdict
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOTS = {
    "bccd": REPO.parent / "shared/data/bccd",
    "txl_pbc": REPO.parent / "shared/data/txl_pbc",
}
REGISTER_FLAG = {"coco": "--register-coco", "voc": "--register-voc", "yolo": "--register-yolo"}
# TXL-PBC's four sources differ in image size (its README): a model that learns that one camera
# never shows platelets is seen in the per-source figures.
TXL_PBC_SOURCES = {
    (640, 480): "BCCD",
    (416, 416): "416x416 set",
    (360, 363): "PBC",
    (366, 369): "PBC",
    (575, 575): "Raabin-WBC",
}
TXL_PBC_PLATELET_CLASS = "2"  # data.yaml: names ['WBC', 'RBC', 'Platelets']
TXL_PBC_VAL_SHARE = 0.2
TXL_PBC_SPLIT_SEED = 0
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def data_label(args):
    """The name of the runs' data in output paths and titles, e.g. ``bccd_val``."""
    return f"{args.dataset}_{args.split}" if args.dataset != "custom" else "custom"


def registration_flags(args, train_name, test_name, output_dir: Path):
    """The launcher flags that register the benchmark's training and test sets."""
    if args.dataset == "custom":
        return _flags(train_name, args.train) + _flags(test_name, args.test)
    root = Path(args.root or DEFAULT_ROOTS[args.dataset]).resolve()
    if args.dataset == "bccd":
        return bccd_flags(root, args.split, args.train_split, train_name, test_name)
    train_list, test_list = txl_pbc_lists(root, args.split, output_dir)
    return _flags(train_name, ["yolo", str(root), str(train_list), "Platelets"]) + _flags(
        test_name, ["yolo", str(root), str(test_list), "Platelets"]
    )


def _flags(name, spec):
    """``--register-<format> NAME ARGS...`` from a ``FORMAT ARGS...`` spec."""
    data_format, *arguments = spec
    return [REGISTER_FLAG[data_format], name, *arguments]


def bccd_flags(root: Path, split, train_split, train_name, test_name):
    train_split = train_split or ("trainval" if split == "test" else "train")
    if train_split.endswith(".txt"):  # a file of one's own; the runs start in the repo
        train_split = str(Path(train_split).resolve())
    return [
        "--register-voc", train_name, str(root), train_split, "Platelets",
        "--register-voc", test_name, str(root), split, "Platelets",
    ]  # fmt: skip


# -------------------------------------------------------------------------------- TXL-PBC


def txl_pbc_lists(root: Path, split, output_dir: Path):
    """(training list file, test list file) of TXL-PBC for ``split`` ("val" or "test")."""
    train_images = _images(root, "train")
    chosen_val = txl_pbc_val_images(root, train_images)
    if split == "val":
        train = [image for image in train_images if image not in chosen_val]
        test = sorted(chosen_val)
    else:
        train = train_images
        test = _images(root, "val") + _images(root, "test")
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = output_dir / f"txl_pbc_{split}_train.txt", output_dir / f"txl_pbc_{split}_test.txt"
    for path, images in zip(paths, (train, test)):
        path.write_text("".join(f"{image}\n" for image in images))
    return paths


def txl_pbc_val_images(root: Path, train_images):
    """The fixed validation share of TXL-PBC's train split, drawn in every stratum (source,
    with or without a platelet) with one seed, so every sitting chooses on the same images."""
    strata = defaultdict(list)
    for image in train_images:
        strata[(source_of(image), _has_platelet(root, image))].append(image)
    rng = random.Random(TXL_PBC_SPLIT_SEED)
    chosen = set()
    for key in sorted(strata):
        images = strata[key]
        chosen.update(rng.sample(images, round(len(images) * TXL_PBC_VAL_SHARE)))
    return chosen


def _images(root: Path, split):
    folder = root / "images" / split
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _has_platelet(root: Path, image):
    label = root / "labels" / Path(image).parent.name / (Path(image).stem + ".txt")
    return label.exists() and any(
        line.split()[:1] == [TXL_PBC_PLATELET_CLASS] for line in label.read_text().splitlines()
    )


def source_of(image):
    """TXL-PBC's source of an image file, from its size."""
    with Image.open(image) as opened:
        return source_of_size(*opened.size)


def source_of_size(width, height):
    """TXL-PBC's source of an image of this size ("other" for a size none of them has)."""
    return TXL_PBC_SOURCES.get((width, height), "other")
