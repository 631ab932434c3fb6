"""Pascal VOC with a chosen subset of its classes: an image holding none of them is a negative.
The split's images are checked to be on disk when it is registered.

Image ids are the digits of each file id ("BloodImage_00338" -> 338), the same in every split.

With ``negative_box_category``, the objects of that class are the images' negative boxes
(:mod:`.negative_boxes`): it is not one of the chosen classes.
"""

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional, Sequence

from detectron2.data import DatasetCatalog
from detectron2.structures import BoxMode

from .negative_boxes import NEGATIVE_BOXES, check_negative_box_category
from .registration import images_not_on_disk, log_composition, set_dataset_metadata

__all__ = ["load_voc_with_negatives", "register_voc"]


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
    return [
        {
            "category_id": class_names.index(_voc_name(obj)),
            "bbox": _voc_box(obj),
            "bbox_mode": BoxMode.XYXY_ABS,
        }
        for obj in tree.findall("object")
        if _voc_name(obj) in class_names
    ]


def _voc_negative_boxes(tree: ET.ElementTree, category: str) -> List[List[float]]:
    return [_voc_box(obj) for obj in tree.findall("object") if _voc_name(obj) == category]


def _voc_name(obj: ET.Element) -> str:
    return obj.find("name").text.strip()


def _voc_box(obj: ET.Element) -> List[float]:
    """An <object>'s <bndbox> in XYXY_ABS. VOC's 1-based inclusive pixel indices, converted as
    detectron2's load_voc_instances does: (xmin=1, xmax=W) covers the whole image, i.e. (0, W)
    in coordinate space."""
    box = obj.find("bndbox")
    xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    return [xmin - 1.0, ymin - 1.0, xmax, ymax]


def _voc_image_path(root: Path, file_id: str) -> str:
    return str(root / "JPEGImages" / f"{file_id}.jpg")


def _voc_record(
    root: Path,
    file_id: str,
    image_id: int,
    class_names: List[str],
    negative_box_category: Optional[str],
) -> dict:
    xml_path = root / "Annotations" / f"{file_id}.xml"
    try:
        tree = ET.parse(xml_path)
        record = {
            "file_name": _voc_image_path(root, file_id),
            "image_id": image_id,
            "height": int(tree.findtext("./size/height")),
            "width": int(tree.findtext("./size/width")),
            "annotations": _voc_annotations(tree, class_names),
        }
        if negative_box_category is not None:
            record[NEGATIVE_BOXES] = _voc_negative_boxes(tree, negative_box_category)
        return record
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(
            f"{xml_path} (image id {image_id}) is not a readable VOC annotation ({err!r}): check "
            "its <size> width/height and each <object>'s <name> and <bndbox> numbers."
        ) from err


def load_voc_with_negatives(
    root: str,
    split: str,
    class_names: Sequence[str],
    missing_images: str = "error",
    negative_box_category: Optional[str] = None,
) -> List[dict]:
    """Load a Pascal VOC split, keeping only the chosen classes.

    Args:
        root: folder with Annotations/*.xml, JPEGImages/*.jpg and ImageSets/Main/{split}.txt.
        split: name of the split file, e.g. "train", "val", "trainval", "test"; or the path
            of a ``.txt`` file of file ids anywhere, for a split of one's own beside a
            read-only copy of the dataset.
        class_names: classes to keep; category id i is class_names[i]. Objects of other
            classes are left out, and an image with none of the chosen classes is a negative.
        missing_images: what to do with a file id of the split whose JPEGImages/*.jpg is not
            on disk: "error" raises naming it, "drop" leaves it out with a warning that counts
            and names it.
        negative_box_category: a class whose objects are negative boxes
            (:mod:`.negative_boxes`), not one of ``class_names``; None = none.

    Returns:
        Dataset dicts with XYXY_ABS boxes; with ``negative_box_category``, each also has
        "negative_boxes" (XYXY_ABS, maybe empty).

    Raises:
        FileNotFoundError: the split file does not exist.
        ValueError: a file id has no digits, two file ids give the same image id, an XML
            file lacks a field, a chosen class has no object in the split, an image is
            not on disk (``missing_images`` "error"; every image, under either policy), or
            ``negative_box_category`` has no object in the split or is a chosen class.
    """
    root, class_names = Path(root), list(class_names)
    split_file = _voc_split_file(root, split)
    file_ids = _voc_file_ids_on_disk(root, split, missing_images)
    dataset_dicts, file_id_of_image_id = [], {}
    for file_id in file_ids:
        image_id = _voc_image_id(file_id, split_file)
        if image_id in file_id_of_image_id:
            raise ValueError(
                f"{split_file}: file ids {file_id_of_image_id[image_id]!r} and {file_id!r} both "
                f"give image id {image_id}. Rename one of them."
            )
        file_id_of_image_id[image_id] = file_id
        dataset_dicts.append(
            _voc_record(root, file_id, image_id, class_names, negative_box_category)
        )
    _check_every_class_occurs(root, split, file_ids, class_names, dataset_dicts)
    if negative_box_category is not None:
        _check_negative_category(
            root, split, file_ids, class_names, negative_box_category, dataset_dicts
        )
    log_composition(f"VOC {root} split {split}", dataset_dicts, len(class_names))
    return dataset_dicts


def _voc_split_file(root: Path, split: str) -> Path:
    return Path(split) if split.endswith(".txt") else root / "ImageSets/Main" / f"{split}.txt"


def _voc_file_ids_on_disk(root: Path, split: str, missing_images: str) -> List[str]:
    """The split's file ids, less those whose image is missing (under "drop"); the XML of a
    missing image is not read, as it is often missing too."""
    file_ids = _voc_file_ids(_voc_split_file(root, split))
    paths = [_voc_image_path(root, file_id) for file_id in file_ids]
    missing = images_not_on_disk(
        f"VOC {root} split {split}", paths, missing_images, f"{root}/JPEGImages"
    )
    return [f for f, path in zip(file_ids, paths) if path not in missing]


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
        raise ValueError(
            f"VOC {root} split {split}: no object of class {missing} in any image. Check the "
            f"spelling (class names are case-sensitive); the split holds "
            f"{_voc_split_names(root, file_ids)}."
        )


def _check_negative_category(root, split, file_ids, class_names, category, dataset_dicts):
    """The negative-box category must mark a box of the split, as each chosen class must."""
    found = any(d[NEGATIVE_BOXES] for d in dataset_dicts)
    # The split's class names (every XML file read again) only for the message of an error.
    names = [category] if found else _voc_split_names(root, file_ids)
    check_negative_box_category(f"VOC {root} split {split}", category, names, class_names)


def _voc_split_names(root: Path, file_ids: List[str]) -> List[str]:
    """The class names of the split's objects (every XML file read again)."""
    return sorted({name for f in file_ids for name in _voc_object_names(root, f)})


def register_voc(
    name: str,
    root: str,
    split: str,
    class_names: Sequence[str],
    missing_images: str = "error",
    negative_box_category: Optional[str] = None,
) -> str:
    """Register a Pascal VOC split with a subset of its classes; see load_voc_with_negatives.

    The split file is read at once, to check that its images are on disk (``missing_images``).
    """
    root, class_names = os.fspath(root), list(class_names)
    _voc_file_ids_on_disk(Path(root), split, missing_images)
    DatasetCatalog.register(
        name,
        lambda: load_voc_with_negatives(
            root, split, class_names, missing_images, negative_box_category
        ),
    )
    set_dataset_metadata(name, class_names, dirname=root, split=split)
    return name
