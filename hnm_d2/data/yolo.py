"""YOLO-format datasets, laid out as ultralytics users keep them; an image without a label file,
or with an empty one, is a negative (ultralytics' "background images").

    ROOT/data.yaml                names: [a, b] or {0: a, 1: b}   (else a classes.txt)
    ROOT/images/SPLIT/**/x.jpg    (or ROOT/SPLIT/images/, as Roboflow exports)
    ROOT/labels/SPLIT/**/x.txt    a row "class cx cy w h" per box, as fractions of the image size

or, as ultralytics also reads a split, SPLIT is a list file (a name ending in .txt, relative to
ROOT or absolute) holding an image path a line, absolute or relative to the list file's folder;
an image's label file is its path with the last ``images`` folder replaced by ``labels`` and
the suffix by .txt, as ultralytics finds it. A list file chooses images from a larger folder,
so the label files of the images it does not name are expected and not warned about.

Class names come from data.yaml's ``names``, else from the first classes.txt of ROOT,
ROOT/labels and the split's label folder. LabelImg writes a classes.txt into the label folder:
it is a class list, never the label file of an image. With a chosen subset of the classes, as
for VOC, an image holding none of them is a negative, and the other classes' boxes are left out
and counted in the log. With ``negative_box_category``, the boxes of that class are the images'
negative boxes (:mod:`.negative_boxes`): it is no class, chosen or left out.

Rows, and the policy for bad ones (the other loaders' policy):

* a row that is not five numbers cannot be a box at all: every such row of the split is listed
  in one error naming the file, the line and the field (as VOC's unreadable <bndbox> is);
* a class index outside the names, a box of zero size or outside the image is kept as an
  annotation, counted in the load's warning and raised or dropped by the mapper's
  ``HNM.DATA.INVALID_ANNOTATIONS``; its "origin" names the file and the line. An invalid
  negative box goes the same way, its file and line named in a warning of the load.

A label file without an image, and a file of the image folder in a format the loader does not
read, are counted and named in a warning. Images are numbered in sorted path order from an id
offset, by default the dataset name's :func:`~.registration.name_id_offset`. Their sizes are
read from the files after EXIF orientation, as detectron2 decodes them and as ultralytics
normalises its labels.
"""

import logging
import os
from collections import Counter
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import yaml
from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from .negative_boxes import NEGATIVE_BOXES, check_negative_box_category
from .registration import (
    IMAGE_EXTENSIONS,
    image_size_after_exif,
    log_composition,
    name_id_offset,
    name_some,
    set_dataset_metadata,
)
from .validation import find_annotation_problem, find_negative_box_problem

__all__ = ["load_yolo_with_negatives", "register_yolo_with_negatives"]

logger = logging.getLogger(__name__)

_DATA_YAML = "data.yaml"
_CLASSES_TXT = "classes.txt"
_ROW_FIELDS = ("class", "cx", "cy", "w", "h")
_ROW_FORMAT = (
    "class cx cy w h: a class index, then the box centre and size as fractions of the image"
)


class _SplitFolders(NamedTuple):
    images: Path
    labels: Path


class _Row(NamedTuple):
    line: int
    text: str
    class_index: int
    box: Tuple[float, float, float, float]  # cx, cy, w, h as fractions of the image


def _is_list_file(split: str) -> bool:
    return split.endswith(".txt")


def _split_folders(root: Path, split: str) -> _SplitFolders:
    """The image and label folders of a split, in either of the layouts ultralytics reads; for
    a list file, ROOT's images/ and labels/ (where a classes.txt is looked for)."""
    if _is_list_file(split):
        list_file = root / split
        if not list_file.is_file():
            raise FileNotFoundError(
                f"YOLO {root}: the split list file {list_file} does not exist. Give SPLIT as a "
                "folder name under images/ or as a .txt list of image paths (relative to ROOT "
                "or absolute)."
            )
        return _SplitFolders(root / "images", root / "labels")
    layouts = [
        _SplitFolders(root / "images" / split, root / "labels" / split),
        _SplitFolders(root / split / "images", root / split / "labels"),
    ]
    for folders in layouts:
        if folders.images.is_dir():
            return folders
    found = sorted(
        {p.name for p in (root / "images").glob("*") if p.is_dir()}
        | {p.parent.name for p in root.glob("*/images") if p.is_dir()}
    )
    raise FileNotFoundError(
        f"YOLO {root}: no image folder for split {split!r}: neither {layouts[0].images} nor "
        f"{layouts[1].images} exists. Check ROOT and SPLIT; splits found: {found or 'none'}."
    )


def _class_names(root: Path, folders: _SplitFolders) -> Tuple[List[str], Path]:
    """The dataset's class names in class-index order, and the file they come from."""
    data_yaml = root / _DATA_YAML
    if data_yaml.is_file():
        names = _names_of_data_yaml(data_yaml)
        if names is not None:
            return names, data_yaml
    for classes_txt in (
        root / _CLASSES_TXT,
        root / "labels" / _CLASSES_TXT,
        folders.labels / _CLASSES_TXT,
    ):
        if classes_txt.is_file():
            names = [line.strip() for line in classes_txt.read_text().splitlines() if line.strip()]
            if not names:
                raise ValueError(f"{classes_txt} names no class: write one class name a line.")
            return names, classes_txt
    raise FileNotFoundError(
        f"YOLO {root}: no class names: neither a {_DATA_YAML} with 'names' nor a {_CLASSES_TXT} "
        f"in {root}, {root / 'labels'} or {folders.labels}. Add {data_yaml} with "
        "'names: [first, second]' in class-index order."
    )


def _names_of_data_yaml(path: Path) -> Optional[List[str]]:
    """data.yaml's ``names`` as a list; None when it has none (ultralytics allows ``nc`` only)."""
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML ({err}): fix it.") from err
    if not isinstance(content, dict) or content.get("names") is None:
        return None
    names = content["names"]
    if isinstance(names, dict):
        names = _names_of_index_dict(path, names)
    if not isinstance(names, list) or not names:
        raise ValueError(
            f"{path}: 'names' is {names!r}; give a list [first, second] or a dict "
            "{0: first, 1: second}."
        )
    if content.get("nc", len(names)) != len(names):
        raise ValueError(
            f"{path}: 'nc' is {content['nc']} but 'names' has {len(names)} entries: make them "
            "agree."
        )
    # YAML reads a bare name such as 1 or yes as a number or a boolean.
    return [str(name) for name in names]


def _names_of_index_dict(path: Path, names: dict) -> list:
    try:
        by_index = {int(index): name for index, name in names.items()}
    except (TypeError, ValueError):
        by_index = {}
    if sorted(by_index) != list(range(len(names))):
        raise ValueError(
            f"{path}: the keys of 'names' are {list(names)}; they must be the class indices 0 .. "
            f"{len(names) - 1}, each once."
        )
    return [by_index[index] for index in range(len(names))]


def _chosen_classes(
    root: Path,
    names: List[str],
    names_file: Path,
    class_names: Optional[Sequence[str]],
    negative_box_category: Optional[str],
) -> List[str]:
    """The classes to learn: ``class_names``, or every name but the negative-box category."""
    if class_names is None:
        chosen = [name for name in names if name != negative_box_category]
    else:
        chosen = list(class_names)
        unknown = [name for name in chosen if name not in names]
        if unknown or not chosen:
            raise ValueError(
                f"YOLO {root}: class {unknown or chosen} is not among the classes of "
                f"{names_file}: {names}. Check the spelling (class names are case-sensitive)."
            )
    if negative_box_category is not None:
        check_negative_box_category(
            f"YOLO {root} ({names_file})", negative_box_category, names, chosen
        )
    return chosen


def _list_images(folders: _SplitFolders) -> List[Path]:
    """The split's image files, sorted; warns about the files it skips and the label files
    without an image."""
    files = sorted(p for p in folders.images.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped = [
        str(p.relative_to(folders.images))
        for p in files
        if p.suffix.lower() not in IMAGE_EXTENSIONS
    ]
    if skipped:
        logger.warning(
            f"{folders.images}: skipped {len(skipped)} files that are not "
            f"{'/'.join(IMAGE_EXTENSIONS)} images: {name_some(skipped)}"
        )
    _warn_about_labels_without_image(folders, files)
    if not images:
        raise ValueError(
            f"YOLO image folder {folders.images} holds no {'/'.join(IMAGE_EXTENSIONS)} file."
        )
    return images


def _images_of_list_file(list_file: Path) -> List[Path]:
    """The images a list file names, in its order; every line must name an image on disk."""
    images, problems = [], []
    for line, text in enumerate(list_file.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not text.strip():
            continue
        image = list_file.parent / text.strip()  # an absolute path stays as it is
        if image.suffix.lower() not in IMAGE_EXTENSIONS:
            problems.append(f"line {line} {text!r}: not a {'/'.join(IMAGE_EXTENSIONS)} image")
        elif not image.is_file():
            problems.append(f"line {line} {text!r}: no such file {image}")
        elif _label_file_of(image) is None:
            problems.append(f"line {line} {text!r}: no 'images' folder in its path")
        else:
            images.append(image)
    if problems:
        raise ValueError(
            f"YOLO list file {list_file}: {len(problems)} lines do not name a usable image: "
            f"{name_some(problems)}. A line holds an image path, absolute or relative to "
            f"{list_file.parent}, inside an images/ folder whose sibling labels/ holds the label "
            "files; fix or delete these lines."
        )
    if not images:
        raise ValueError(f"YOLO list file {list_file} names no image.")
    return images


def _label_file_of(image: Path) -> Optional[Path]:
    """The label file ultralytics reads for an image named by a list file: the last ``images``
    folder of its path replaced by ``labels``; None when the path has no such folder."""
    parts = image.parts
    if "images" not in parts[:-1]:
        return None
    last = len(parts) - 2 - parts[-2::-1].index("images")
    return Path(*parts[:last], "labels", *parts[last + 1 :]).with_suffix(".txt")


def _images_and_label_files(root: Path, split: str, folders: _SplitFolders):
    """(image, label file) of every image of the split, in the order they are numbered."""
    if _is_list_file(split):
        return [(image, _label_file_of(image)) for image in _images_of_list_file(root / split)]
    return [
        (image, folders.labels / image.relative_to(folders.images).with_suffix(".txt"))
        for image in _list_images(folders)
    ]


def _warn_about_labels_without_image(folders: _SplitFolders, image_files: List[Path]) -> None:
    if not folders.labels.is_dir():
        logger.warning(
            f"{folders.labels} does not exist: every image of {folders.images} is a negative."
        )
        return
    stems = {p.relative_to(folders.images).with_suffix("") for p in image_files}
    orphans = [
        str(p.relative_to(folders.labels))
        for p in sorted(folders.labels.rglob("*.txt"))
        if p.relative_to(folders.labels).with_suffix("") not in stems and p.name != _CLASSES_TXT
    ]
    if orphans:
        logger.warning(
            f"{folders.labels}: {len(orphans)} label files have no image in {folders.images}, "
            f"and their boxes are not loaded: {name_some(orphans)}"
        )


def _read_rows(label_file: Path) -> Tuple[List[_Row], List[str]]:
    """The box rows of a label file, and a description of each row that is not one."""
    rows, malformed = [], []
    try:
        # utf-8-sig: a byte-order mark written by a Windows editor is not part of the first row.
        lines = label_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{label_file} is not a text file ({err}): a label file holds rows of "
            f"{_ROW_FORMAT}. Replace or delete it."
        ) from err
    for line, text in enumerate(lines, 1):
        values = text.split()
        if not values:
            continue
        problem = _row_problem(values)
        if problem is not None:
            malformed.append(f"{label_file} line {line} {text.strip()!r}: {problem}")
            continue
        numbers = [float(v) for v in values]
        rows.append(_Row(line, text.strip(), int(numbers[0]), tuple(numbers[1:])))
    return rows, malformed


def _row_problem(values: List[str]) -> Optional[str]:
    if len(values) != len(_ROW_FIELDS):
        polygon = len(values) > len(_ROW_FIELDS) and len(values) % 2 == 1
        return f"{len(values)} values where a box row has 5 ({_ROW_FORMAT})" + (
            "; this looks like a polygon of the segmentation format: convert it to its box"
            if polygon
            else ""
        )
    for field, value in zip(_ROW_FIELDS, values):
        try:
            number = float(value)
        except ValueError:
            return f"{field} {value!r} is not a number ({_ROW_FORMAT})"
        if field == "class" and not number.is_integer():
            return f"class {value!r} is not a class index ({_ROW_FORMAT})"
    return None


class _Classes:
    """The dataset's class names, the chosen ones and the negative-box category: maps a row's
    class index to a category."""

    def __init__(
        self,
        names: List[str],
        chosen: List[str],
        names_file: Path,
        negative_box_category: Optional[str],
    ):
        self.names, self.chosen, self.names_file = names, chosen, names_file
        self.negative_box_category = negative_box_category

    def is_negative_box(self, class_index: int) -> bool:
        return 0 <= class_index < len(self.names) and (
            self.names[class_index] == self.negative_box_category
        )

    def category_id(self, class_index: int) -> Optional[int]:
        """The chosen category of a class index; None for a class not chosen. An index outside
        the names is kept as it is, so that validation reports it as an unknown category."""
        if not 0 <= class_index < len(self.names):
            return class_index
        name = self.names[class_index]
        return self.chosen.index(name) if name in self.chosen else None


class _Tally:
    """What loading a split found on the way, for its log lines and its error."""

    def __init__(self):
        self.negatives = Counter()  # why each negative image is one
        self.boxes_left_out = Counter()  # class name -> boxes of the classes not chosen
        self.malformed_rows: List[str] = []
        # A negative box is a bare [x0, y0, x1, y1] without room for its origin, so the mapper
        # can name only its image and index: its label-file line is named here, at loading.
        self.invalid_negative_boxes: List[str] = []


def _record(image: Path, image_id: int, label_file: Path, classes: _Classes, tally: _Tally):
    height, width = image_size_after_exif(image)
    rows = []
    if label_file.is_file():
        rows, malformed = _read_rows(label_file)
        tally.malformed_rows += malformed
    annotations, negative_boxes = [], []
    for row in rows:
        if classes.is_negative_box(row.class_index):
            negative_boxes.append(_negative_box(row, height, width, label_file, tally))
            continue
        category_id = classes.category_id(row.class_index)
        if category_id is None:
            tally.boxes_left_out[classes.names[row.class_index]] += 1
        else:
            annotations.append(_annotation(row, category_id, height, width, label_file, classes))
    if not annotations:
        tally.negatives[_why_negative(label_file, rows, negative_boxes)] += 1
    record = {
        "file_name": str(image),
        "image_id": image_id,
        "height": height,
        "width": width,
        "annotations": annotations,
    }
    if classes.negative_box_category is not None:
        record[NEGATIVE_BOXES] = negative_boxes
    return record


def _why_negative(label_file: Path, rows: List[_Row], negative_boxes: list) -> str:
    if not label_file.is_file():
        return "no label file"
    if not rows:
        return "an empty label file"
    return "negative boxes only" if len(negative_boxes) == len(rows) else "no box of a chosen class"


def _pixel_box(row: _Row, height: int, width: int) -> List[float]:
    """A row's box in XYXY_ABS pixels."""
    cx, cy, w, h = row.box
    x0, y0 = (cx - w / 2) * width, (cy - h / 2) * height
    return [x0, y0, x0 + w * width, y0 + h * height]


def _negative_box(row: _Row, height: int, width: int, label_file: Path, tally: _Tally):
    box = _pixel_box(row, height, width)
    problem = find_negative_box_problem(box, height, width)
    if problem is not None:
        tally.invalid_negative_boxes.append(f"{label_file} line {row.line} {row.text!r}: {problem}")
    return box


def _annotation(row: _Row, category_id: int, height: int, width: int, label_file, classes):
    annotation = {
        "category_id": category_id,
        "bbox": _pixel_box(row, height, width),
        "bbox_mode": BoxMode.XYXY_ABS,
    }
    # Only an invalid annotation carries its origin: the messages that name it need it, and
    # a million valid boxes need not carry a string each.
    if find_annotation_problem(annotation, height, width, len(classes.chosen)) is not None:
        annotation["origin"] = (
            f"{label_file} line {row.line} {row.text!r} ({_ROW_FORMAT}; the class indexes "
            f"the {len(classes.names)} names of {classes.names_file})"
        )
    return annotation


def load_yolo_with_negatives(
    root: str,
    split: str,
    class_names: Optional[Sequence[str]] = None,
    id_offset: int = 0,
    negative_box_category: Optional[str] = None,
) -> List[dict]:
    """Load a split of a YOLO-format dataset; images without a box are negatives.

    Args:
        root: the dataset folder (holding data.yaml, images/ and labels/; see the module).
        split: the split's folder name under images/ and labels/, e.g. "train", "val", or a
            list file of image paths (a name ending in .txt; see the module).
        class_names: classes to keep, by name; category id i is class_names[i]. Boxes of the
            other classes are left out (counted in the log), and an image with none of the
            chosen classes is a negative. None keeps every class, in class-index order.
        id_offset: image id of the first image in sorted path order (a list file's order);
            the others follow.
        negative_box_category: a class name whose boxes are negative boxes
            (:mod:`.negative_boxes`), not objects; not one of ``class_names``, and left out of
            them when they are None. None = none.

    Returns:
        Dataset dicts with XYXY_ABS boxes in pixels of the image as detectron2 decodes it;
        with ``negative_box_category``, each also has "negative_boxes" (maybe empty).

    Raises:
        FileNotFoundError: the split's image folder, or every source of class names, is
            missing.
        ValueError: data.yaml is malformed, a chosen class or the negative-box category is
            not among the names, the image folder holds no image or an unreadable one, or rows
            are not five numbers.
    """
    root = Path(root)
    folders = _split_folders(root, split)
    names, names_file = _class_names(root, folders)
    chosen = _chosen_classes(root, names, names_file, class_names, negative_box_category)
    classes = _Classes(names, chosen, names_file, negative_box_category)
    tally, dataset_dicts = _Tally(), []
    for index, (image, label_file) in enumerate(_images_and_label_files(root, split, folders)):
        dataset_dicts.append(_record(image, id_offset + index, label_file, classes, tally))
    source = f"YOLO {root} split {split}"
    if tally.malformed_rows:
        raise ValueError(
            f"{source}: {len(tally.malformed_rows)} rows are not boxes: "
            f"{name_some(tally.malformed_rows)}. Fix or delete these lines."
        )
    _log_what_was_left_out(source, classes, tally)
    _warn_about_invalid_negative_boxes(source, tally)
    log_composition(source, dataset_dicts, len(classes.chosen))
    return dataset_dicts


def _log_what_was_left_out(source: str, classes: _Classes, tally: _Tally) -> None:
    logger.info(
        f"{source}: classes {classes.chosen} of {classes.names} ({classes.names_file}); "
        f"negative images: {dict(tally.negatives) or 'none'}."
    )
    if tally.boxes_left_out:
        logger.info(
            f"{source}: left out {sum(tally.boxes_left_out.values())} boxes of the classes not "
            f"chosen: {dict(tally.boxes_left_out)}."
        )


def _warn_about_invalid_negative_boxes(source: str, tally: _Tally) -> None:
    if tally.invalid_negative_boxes:
        logger.warning(
            f"{source}: {len(tally.invalid_negative_boxes)} invalid negative boxes, kept for the "
            "mapper's HNM.DATA.INVALID_ANNOTATIONS policy (error or drop): "
            f"{name_some(tally.invalid_negative_boxes)}. Fix these lines."
        )


def register_yolo_with_negatives(
    name: str,
    root: str,
    split: str,
    class_names: Optional[Sequence[str]] = None,
    id_offset: Optional[int] = None,
    negative_box_category: Optional[str] = None,
) -> str:
    """Register a split of a YOLO-format dataset; see :func:`load_yolo_with_negatives`.

    The split's folders and the class names are read at once, so that a wrong ROOT, SPLIT or
    class name fails here and thing_classes is set; the label files are read when the dataset
    is loaded.

    Args:
        name: dataset name.
        root, split, class_names, negative_box_category: see
            :func:`load_yolo_with_negatives`.
        id_offset: first image id; None = ``name_id_offset(name)`` (see :mod:`.registration`).
    """
    root_path = Path(root)
    folders = _split_folders(root_path, split)
    names, names_file = _class_names(root_path, folders)
    chosen = _chosen_classes(root_path, names, names_file, class_names, negative_box_category)
    offset = name_id_offset(name) if id_offset is None else id_offset
    root = os.fspath(root)
    DatasetCatalog.register(
        name,
        lambda: load_yolo_with_negatives(root, split, chosen, offset, negative_box_category),
    )
    set_dataset_metadata(name, chosen, image_root=str(folders.images), dirname=root, split=split)
    return name
