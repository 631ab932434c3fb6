"""Dataset registration that keeps negative images: COCO JSON, Pascal VOC, a folder of images.

Each ``register_*`` function registers a lazy loader in detectron2's DatasetCatalog, sets the
dataset's metadata (thing_classes, evaluator_type "coco") at once so the model and mapper can be
built before the data is loaded, and returns the name. Each loader is also public as a pure
``load_*`` function returning ``list[dict]``.

A negative image is a dataset dict whose "annotations" list is empty or missing. The loaders
never drop annotations: invalid boxes are counted in a warning here and handled by the
mapper's ``HNM.DATA.INVALID_ANNOTATIONS`` policy.

Image ids need only be unique within a dataset (COCOEvaluator matches predictions to images by
them). Across datasets they may repeat, as separate COCO files all number from 1: hnm_d2
identifies an image by its file wherever it needs an identity (the hard-negative buffer, the
mining pool). The loaders number images as follows:

* COCO keeps the ids of its JSON (what COCOEvaluator expects);
* VOC takes the digits of each file id ("BloodImage_00338" -> 338, "2008_000008" ->
  2008000008), the same in every split;
* a folder of negative images numbers its files in sorted order from ``id_offset``, which by
  default is ``name_id_offset(name)``: a multiple of 10**9 between 10**9 and 10**15 picked by
  the dataset name, so that its ids stand apart from COCO's and VOC's in logs and reports.
"""

import argparse
import json
import logging
import os
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode
from PIL import Image

from .subsets import is_negative_image, register_subset
from .validation import describe_annotation, find_annotation_problem

__all__ = [
    "IMAGE_EXTENSIONS",
    "add_registration_arguments",
    "load_coco_with_negatives",
    "load_negative_folder",
    "load_voc_with_negatives",
    "name_id_offset",
    "register_coco_with_negatives",
    "register_from_args",
    "register_negative_folder",
    "register_voc",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# EXIF orientations that rotate by 90 or 270 degrees: detectron2's read_image applies them,
# so the decoded image has width and height swapped relative to the file header.
_TRANSPOSING_EXIF_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112
_ID_BLOCK = 10**9
_ID_BLOCKS = 10**6
_INVALID_EXAMPLES_SHOWN = 5


def name_id_offset(name: str) -> int:
    """A stable image-id base for a dataset name: a multiple of 10**9 in [10**9, 10**15].

    Stable across runs and machines (CRC32, not Python's salted hash), and below 2**53 so ids
    stay exact in float64 and JSON tools.
    """
    return _ID_BLOCK * (1 + zlib.crc32(name.encode("utf-8")) % _ID_BLOCKS)


def _set_metadata(name: str, thing_classes: Sequence[str], **extra) -> None:
    MetadataCatalog.get(name).set(thing_classes=list(thing_classes), evaluator_type="coco", **extra)


def _log_composition(source: str, dataset_dicts: List[dict], num_classes: int) -> None:
    """Log the positive/negative split and warn about annotations the mapper will reject."""
    num_negative = sum(is_negative_image(d) for d in dataset_dicts)
    logger.info(
        f"{source}: {len(dataset_dicts)} images, {len(dataset_dicts) - num_negative} positive, "
        f"{num_negative} negative."
    )
    problems = _describe_invalid_annotations(dataset_dicts, num_classes)
    if problems:
        shown = "; ".join(problems[:_INVALID_EXAMPLES_SHOWN])
        logger.warning(
            f"{source}: {len(problems)} invalid annotations, kept for the mapper's "
            f"HNM.DATA.INVALID_ANNOTATIONS policy (error or drop). First ones: {shown}"
        )


def _describe_invalid_annotations(dataset_dicts: List[dict], num_classes: int) -> List[str]:
    descriptions = []
    for d in dataset_dicts:
        for index, obj in enumerate(d["annotations"]):
            reason = find_annotation_problem(obj, d["height"], d["width"], num_classes)
            if reason is not None:
                descriptions.append(
                    describe_annotation(d["file_name"], d["image_id"], index, reason)
                )
    return descriptions


# ----------------------------------------------------------------------------- COCO JSON


def _validate_coco_json(json_file: str) -> List[str]:
    """Validate a COCO JSON's images and return its class names, ordered by category id.

    Raises:
        ValueError: the file is not JSON, has no images, repeats an image id, or has no
            categories.
    """
    try:
        with open(json_file) as f:
            content = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_file} is not valid JSON ({err}): fix or regenerate it.") from err
    images = content.get("images") or []
    if not images:
        raise ValueError(
            f"{json_file} lists no images: a COCO JSON needs an 'images' list (negative images "
            "are images without annotations)."
        )
    for index, image in enumerate(images):
        _check_coco_entry(json_file, "images", index, image, _COCO_IMAGE_FIELDS)
    _check_unique_image_ids(json_file, images)
    categories = content.get("categories") or []
    if not categories:
        raise ValueError(
            f"{json_file} has no 'categories': add one entry per class, e.g. "
            '{"id": 1, "name": "target"}, even if every image is negative.'
        )
    for index, category in enumerate(categories):
        _check_coco_entry(json_file, "categories", index, category, _COCO_CATEGORY_FIELDS)
    _check_coco_annotations(json_file, content.get("annotations") or [], images, categories)
    return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# field -> (check, what the field must be); detectron2's load_coco_json reads all of these.
_COCO_IMAGE_FIELDS = {
    "id": (_is_int, "an integer"),
    "file_name": (lambda v: isinstance(v, str) and v != "", "a non-empty path"),
    "height": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "width": (lambda v: _is_int(v) and v > 0, "a positive integer"),
}
_COCO_CATEGORY_FIELDS = {
    "id": (_is_int, "an integer"),
    "name": (lambda v: isinstance(v, str), "a string"),
}
_COCO_ANNOTATION_FIELDS = {
    "id": (_is_int, "an integer"),
    "image_id": (_is_int, "an integer"),
    "category_id": (_is_int, "an integer"),
}


def _check_coco_entry(json_file: str, section: str, index: int, entry, fields: dict) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{json_file}: {section}[{index}] is {entry!r}, not an object.")
    for field, (check, expected) in fields.items():
        if field not in entry:
            raise ValueError(f"{json_file}: {section}[{index}] has no '{field}'; add it.")
        if not check(entry[field]):
            raise ValueError(
                f"{json_file}: {section}[{index}] has '{field}' {entry[field]!r}; it must be "
                f"{expected}."
            )


def _check_coco_annotations(json_file: str, annotations, images, categories) -> None:
    """Every annotation must name an image and a category of the file.

    pycocotools silently ignores an annotation whose image id matches no image, and
    load_coco_json fails on an unknown category without naming the file.
    """
    image_ids = {image["id"] for image in images}
    category_ids = {category["id"] for category in categories}
    annotation_ids = set()
    for index, annotation in enumerate(annotations):
        _check_coco_entry(json_file, "annotations", index, annotation, _COCO_ANNOTATION_FIELDS)
        if annotation["id"] in annotation_ids:
            raise ValueError(
                f"{json_file}: annotations[{index}] repeats annotation id {annotation['id']}; "
                "give every annotation a unique 'id'."
            )
        annotation_ids.add(annotation["id"])
        for field, known in (("image_id", image_ids), ("category_id", category_ids)):
            if annotation[field] not in known:
                raise ValueError(
                    f"{json_file}: annotations[{index}] has {field} {annotation[field]} that "
                    f"matches no entry of '{'images' if field == 'image_id' else 'categories'}'"
                    ": fix the id or remove the annotation."
                )
        if "bbox" in annotation and not isinstance(annotation["bbox"], list):
            raise ValueError(
                f"{json_file}: annotations[{index}] has bbox {annotation['bbox']!r}; it must be "
                "a list [x, y, width, height]."
            )


def _check_unique_image_ids(json_file: str, images: List[dict]) -> None:
    # pycocotools indexes images by id, so a repeated id silently merges two images into one.
    seen = {}
    for image in images:
        image_id = image.get("id")
        if image_id in seen:
            raise ValueError(
                f"{json_file}: image id {image_id!r} is used by both {seen[image_id]!r} and "
                f"{image.get('file_name')!r}. Give every entry of 'images' a unique 'id'."
            )
        seen[image_id] = image.get("file_name")


def load_coco_with_negatives(json_file: str, image_root: str, dataset_name: str) -> List[dict]:
    """Load a COCO JSON, keeping images without annotations as negatives.

    detectron2's ``load_coco_json`` already keeps every image of the JSON (an image without
    annotations gets an empty "annotations" list); this adds the checks it lacks.

    Args:
        json_file: COCO instances JSON.
        image_root: folder that the JSON's file names are relative to.
        dataset_name: metadata entry that ``load_coco_json`` fills with thing_classes and the
            map from JSON category ids to contiguous ids 0 .. C - 1.

    Returns:
        Dataset dicts with XYWH_ABS boxes and contiguous category ids.

    Raises:
        ValueError: see ``register_coco_with_negatives``.
    """
    thing_classes = _validate_coco_json(json_file)
    dataset_dicts = load_coco_json(json_file, image_root, dataset_name)
    _log_composition(f"COCO {json_file}", dataset_dicts, len(thing_classes))
    return dataset_dicts


def register_coco_with_negatives(name: str, json_file: str, image_root: str) -> str:
    """Register a COCO JSON whose images without annotations are negative images.

    The JSON is read at once to validate it and set thing_classes; metadata json_file is set
    because ``load_coco_json`` keeps the JSON's image ids, so COCOEvaluator can use the file.

    Raises:
        ValueError: the JSON has no images, repeats an image id, or has no categories.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    thing_classes = _validate_coco_json(json_file)
    DatasetCatalog.register(name, lambda: load_coco_with_negatives(json_file, image_root, name))
    _set_metadata(name, thing_classes, json_file=json_file, image_root=image_root)
    return name


# --------------------------------------------------------------------- folder of negatives


def _image_size_after_exif(path: Path) -> tuple:
    """(height, width) of an image as detectron2's read_image will decode it; header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
    except OSError as err:
        raise ValueError(
            f"Cannot read image {path} ({err}): fix or remove the file from the folder."
        ) from err
    if orientation in _TRANSPOSING_EXIF_ORIENTATIONS:
        return width, height
    return height, width


def load_negative_folder(folder: str, id_offset: int) -> List[dict]:
    """Dataset dicts of negative images for every image file directly in a folder.

    Args:
        folder: a folder of .jpg/.jpeg/.png/.bmp images (extension case-insensitive); other
            entries are skipped with a warning that counts and names them.
        id_offset: image id of the first file in sorted order; the others follow.

    Returns:
        One dict per image, sorted by file name, with an empty "annotations" list.

    Raises:
        ValueError: the folder does not exist, holds no image, or an image is unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Negative-image folder {folder} does not exist or is not a folder.")
    entries = sorted(folder.iterdir())
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped = sorted({p.name for p in entries} - {p.name for p in images})
    if skipped:
        logger.warning(
            f"{folder}: skipped {len(skipped)} entries that are not {'/'.join(IMAGE_EXTENSIONS)} "
            f"files: {skipped}"
        )
    if not images:
        raise ValueError(
            f"Negative-image folder {folder} holds no {'/'.join(IMAGE_EXTENSIONS)} file."
        )
    dataset_dicts = []
    for index, path in enumerate(images):
        height, width = _image_size_after_exif(path)
        dataset_dicts.append(
            {
                "file_name": str(path),
                "image_id": id_offset + index,
                "height": height,
                "width": width,
                "annotations": [],
            }
        )
    logger.info(f"{folder}: {len(dataset_dicts)} negative images, ids from {id_offset}.")
    return dataset_dicts


def register_negative_folder(
    name: str, folder: str, thing_classes: Sequence[str], id_offset: Optional[int] = None
) -> str:
    """Register every image of a folder as a negative image.

    Args:
        name: dataset name.
        folder: see :func:`load_negative_folder`.
        thing_classes: class names of the datasets this one is trained or evaluated with.
        id_offset: first image id; None = ``name_id_offset(name)`` (see the module docstring).
    """
    folder = os.fspath(folder)
    offset = name_id_offset(name) if id_offset is None else id_offset
    DatasetCatalog.register(name, lambda: load_negative_folder(folder, offset))
    _set_metadata(name, thing_classes, image_root=folder)
    return name


# ---------------------------------------------------------------------------- Pascal VOC


def _voc_image_id(file_id: str, split_file: Path) -> int:
    digits = "".join(c for c in file_id if c.isdigit())
    if not digits:
        raise ValueError(
            f"{split_file}: file id {file_id!r} has no digits to make an integer image id "
            "from. Rename the files, or convert the dataset to COCO JSON and register it with "
            "register_coco_with_negatives."
        )
    return int(digits)


def _voc_annotations(tree: ET.ElementTree, class_names: Sequence[str]) -> List[dict]:
    annotations = []
    for obj in tree.findall("object"):
        name = obj.find("name").text.strip()
        if name not in class_names:
            continue
        box = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        # VOC's 1-based inclusive pixel indices, converted as detectron2's load_voc_instances
        # does: (xmin=1, xmax=W) covers the whole image, i.e. (0, W) in coordinate space.
        annotations.append(
            {
                "category_id": class_names.index(name),
                "bbox": [xmin - 1.0, ymin - 1.0, xmax, ymax],
                "bbox_mode": BoxMode.XYXY_ABS,
            }
        )
    return annotations


def _voc_record(root: Path, file_id: str, image_id: int, class_names: List[str]) -> dict:
    xml_path = root / "Annotations" / f"{file_id}.xml"
    try:
        tree = ET.parse(xml_path)
        return {
            "file_name": str(root / "JPEGImages" / f"{file_id}.jpg"),
            "image_id": image_id,
            "height": int(tree.findtext("./size/height")),
            "width": int(tree.findtext("./size/width")),
            "annotations": _voc_annotations(tree, class_names),
        }
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(
            f"{xml_path} (image id {image_id}) is not a readable VOC annotation ({err!r}): check "
            "its <size> width/height and each <object>'s <name> and <bndbox> numbers."
        ) from err


def load_voc_with_negatives(root: str, split: str, class_names: Sequence[str]) -> List[dict]:
    """Load a Pascal VOC split, keeping only the chosen classes.

    Args:
        root: folder with Annotations/*.xml, JPEGImages/*.jpg and ImageSets/Main/{split}.txt.
        split: name of the split file, e.g. "train", "val", "trainval", "test"; or the path
            of a ``.txt`` file of file ids anywhere, for a split of one's own beside a
            read-only copy of the dataset.
        class_names: classes to keep; category id i is class_names[i]. Objects of other
            classes are left out, and an image with none of the chosen classes is a negative.

    Returns:
        Dataset dicts with XYXY_ABS boxes.

    Raises:
        FileNotFoundError: the split file does not exist.
        ValueError: a file id has no digits, two file ids give the same image id, an XML
            file lacks a field, or a chosen class has no object in the split.
    """
    root, class_names = Path(root), list(class_names)
    split_file = Path(split) if split.endswith(".txt") else root / "ImageSets/Main" / f"{split}.txt"
    file_ids = _voc_file_ids(split_file)
    dataset_dicts, file_id_of_image_id = [], {}
    for file_id in file_ids:
        image_id = _voc_image_id(file_id, split_file)
        if image_id in file_id_of_image_id:
            raise ValueError(
                f"{split_file}: file ids {file_id_of_image_id[image_id]!r} and {file_id!r} both "
                f"give image id {image_id}. Rename one of them."
            )
        file_id_of_image_id[image_id] = file_id
        dataset_dicts.append(_voc_record(root, file_id, image_id, class_names))
    _check_every_class_occurs(root, split, file_ids, class_names, dataset_dicts)
    _log_composition(f"VOC {root} split {split}", dataset_dicts, len(class_names))
    return dataset_dicts


def _voc_file_ids(split_file: Path) -> List[str]:
    if not split_file.is_file():
        splits = sorted(p.stem for p in split_file.parent.glob("*.txt"))
        raise FileNotFoundError(
            f"VOC split file {split_file} does not exist. Check ROOT (it must hold "
            f"ImageSets/Main/) and SPLIT; splits found there: {splits or 'none'}."
        )
    return [line.strip() for line in split_file.read_text().splitlines() if line.strip()]


def _voc_object_names(root: Path, file_id: str) -> List[str]:
    tree = ET.parse(root / "Annotations" / f"{file_id}.xml")
    return [str(obj.findtext("name")) for obj in tree.iterfind("./object")]


def _check_every_class_occurs(root, split, file_ids, class_names, dataset_dicts) -> None:
    """A chosen class with no box in the split is almost always a misspelt name, which would
    otherwise silently turn every image into a negative."""
    found = {a["category_id"] for d in dataset_dicts for a in d["annotations"]}
    missing = [name for i, name in enumerate(class_names) if i not in found]
    if missing:
        present = sorted({name for f in file_ids for name in _voc_object_names(root, f)})
        raise ValueError(
            f"VOC {root} split {split}: no object of class {missing} in any image. Check the "
            f"spelling (class names are case-sensitive); the split holds {present}."
        )


def register_voc(name: str, root: str, split: str, class_names: Sequence[str]) -> str:
    """Register a Pascal VOC split with a subset of its classes; see load_voc_with_negatives."""
    root, class_names = os.fspath(root), list(class_names)
    DatasetCatalog.register(name, lambda: load_voc_with_negatives(root, split, class_names))
    _set_metadata(name, class_names, dirname=root, split=split)
    return name


# ------------------------------------------------------------------------- command line


def add_registration_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the dataset-registration flags to a launcher's parser; returns the parser.

    The folders of --register-negatives take their class names from --negatives-classes, or
    else from the first --register-coco dataset, or else from the first --register-voc one.
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
        help="class names for --register-negatives (default: those of the first COCO/VOC one)",
    )
    return parser


def _parse_class_list(text: str, flag: str) -> List[str]:
    classes = [c.strip() for c in text.split(",")]
    if not all(classes):
        raise ValueError(f"{flag} {text!r}: give comma-separated class names, e.g. RBC,WBC.")
    return classes


def register_from_args(args: argparse.Namespace) -> List[str]:
    """Perform the registrations requested by :func:`add_registration_arguments`' flags.

    Returns:
        The registered dataset names, COCO first, then VOC, then negative folders, then
        subsets (which may name any of the others as parent).

    Raises:
        ValueError: --register-negatives without any source of class names.
    """
    names = [register_coco_with_negatives(*spec) for spec in args.register_coco]
    for name, root, split, classes in args.register_voc:
        names.append(register_voc(name, root, split, _parse_class_list(classes, "--register-voc")))
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
        "also register a --register-coco or --register-voc dataset to take them from."
    )
