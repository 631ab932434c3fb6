"""The command-line flags that register datasets (--register-coco, --register-voc,
--register-yolo, --register-negatives, --register-subset, and --missing-images and
--negative-box-category, which apply to the first three), shared by every hnm_d2 launcher.

These are registration flags, not config keys, because the launchers register the datasets
before they build the config (a registered dataset's metadata is what the config is checked
against)."""

import argparse
from typing import List

from detectron2.data import MetadataCatalog

from .coco import register_coco_with_negatives
from .negative_folder import register_negative_folder
from .registration import MISSING_IMAGE_POLICIES
from .subsets import register_subset
from .voc import register_voc
from .yolo import register_yolo_with_negatives

__all__ = ["add_registration_arguments", "register_from_args"]


def add_registration_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the dataset-registration flags to a launcher's parser; returns the parser.

    The folders of --register-negatives take their class names from --negatives-classes, or
    else from the first --register-coco dataset, or else from the first --register-voc one,
    or else from the first --register-yolo one.
    """
    group = parser.add_argument_group("dataset registration (hnm_d2)")
    group.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO JSON; its images without annotations are negatives",
    )
    group.add_argument(
        "--register-voc",
        nargs=4,
        action="append",
        default=[],
        metavar=("NAME", "ROOT", "SPLIT", "CLASS[,CLASS]"),
        help="register a Pascal VOC split keeping these classes; other images are negatives. "
        "SPLIT names ROOT/ImageSets/Main/SPLIT.txt, or is the path of a .txt file of file ids",
    )
    group.add_argument(
        "--register-yolo",
        nargs="+",
        action=_YoloRegistration,
        default=[],
        metavar=("NAME ROOT SPLIT", "CLASS[,CLASS]"),
        help="register a YOLO-format split (ROOT/images/SPLIT, ROOT/labels/SPLIT, or SPLIT a "
        ".txt list of image paths; class names from ROOT/data.yaml), keeping every class or "
        "these; images without a box of them are negatives",
    )
    group.add_argument(
        "--missing-images",
        choices=MISSING_IMAGE_POLICIES,
        default="error",
        help="an image that a --register-coco/--register-voc dataset lists but the disk lacks: "
        "error (default) when registering, or drop it with a warning that names it",
    )
    group.add_argument(
        "--negative-box-category",
        metavar="NAME",
        help="a category of the --register-coco/--register-voc/--register-yolo datasets whose "
        "boxes are negative boxes (looks like an object, and is not): no class, but trained as "
        "background every time its image is seen",
    )
    group.add_argument(
        "--register-negatives",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "DIR"),
        help="register every image in DIR as a negative image",
    )
    group.add_argument(
        "--register-subset",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "PARENT", "positives|negatives"),
        help="register the positive or negative images of a dataset registered above",
    )
    group.add_argument(
        "--negatives-classes",
        metavar="CLASS[,CLASS]",
        help="class names for --register-negatives (default: those of the first COCO, VOC or "
        "YOLO one)",
    )
    return parser


class _YoloRegistration(argparse.Action):
    """Appends NAME ROOT SPLIT [CLASS[,CLASS]]: three or four values.

    More values mean that the config options after the flag (KEY VALUE ...) were read as its
    values: argparse gives a flag of variable length every value up to the next flag.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (3, 4):
            parser.error(
                f"{option_string} takes NAME ROOT SPLIT [CLASS[,CLASS]], got {len(values)} "
                f"values {values}. If config options (KEY VALUE) follow it, put another flag "
                f"between them, e.g. {option_string} ... --config-file FILE KEY VALUE."
            )
        # A new list, as argparse's "append" makes: the default list is shared by every parse.
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), values])


def _parse_class_list(text: str, flag: str) -> List[str]:
    classes = [c.strip() for c in text.split(",")]
    if not all(classes):
        raise ValueError(f"{flag} {text!r}: give comma-separated class names, e.g. RBC,WBC.")
    return classes


def register_from_args(args: argparse.Namespace) -> List[str]:
    """Perform the registrations requested by :func:`add_registration_arguments`' flags.

    Returns:
        The registered dataset names, COCO first, then VOC, then YOLO, then negative folders,
        then subsets (which may name any of the others as parent).

    Raises:
        ValueError: --register-negatives without any source of class names.
    """
    missing, negative = args.missing_images, args.negative_box_category
    names = [
        register_coco_with_negatives(*spec, missing, negative_box_category=negative)
        for spec in args.register_coco
    ]
    for name, root, split, classes in args.register_voc:
        classes = _parse_class_list(classes, "--register-voc")
        names.append(register_voc(name, root, split, classes, missing, negative))
    for name, root, split, *classes in args.register_yolo:
        classes = _parse_class_list(classes[0], "--register-yolo") if classes else None
        names.append(
            register_yolo_with_negatives(name, root, split, classes, negative_box_category=negative)
        )
    if args.register_negatives:
        thing_classes = _negatives_classes(args, names)
        names += [
            register_negative_folder(name, folder, thing_classes)
            for name, folder in args.register_negatives
        ]
    names += [register_subset(*spec) for spec in args.register_subset]
    return names


def _negatives_classes(args: argparse.Namespace, registered: List[str]) -> List[str]:
    if args.negatives_classes:
        return _parse_class_list(args.negatives_classes, "--negatives-classes")
    if registered:
        return list(MetadataCatalog.get(registered[0]).thing_classes)
    raise ValueError(
        "--register-negatives needs class names: add --negatives-classes CLASS[,CLASS], or "
        "also register a --register-coco, --register-voc or --register-yolo dataset to take "
        "them from."
    )
