"""COCO JSON with negative images: the JSON is validated before detectron2's ``load_coco_json``
reads it, so a malformed file fails naming the file, the entry and the field, and its images
are checked to be on disk when it is registered, not when the mapper first reaches one.

An image of the JSON without annotations is a negative image (see :mod:`.registration`).
With ``negative_box_category``, the annotations of that category are the images' negative
boxes (:mod:`.negative_boxes`), and the category is no class: the contiguous ids are those of
the file without it.
"""

import json
import os
from typing import Dict, List, Optional, Set

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .negative_boxes import NEGATIVE_BOXES, check_negative_box_category
from .registration import images_not_on_disk, log_composition, set_dataset_metadata

__all__ = ["load_coco_with_negatives", "register_coco_with_negatives"]


def _validate_coco_json(json_file: str) -> dict:
    """Read and validate a COCO JSON; returns its content.

    Raises:
        ValueError: the file is not JSON, is not an object of lists, has no images, repeats an
            image id, or has no categories.
    """
    try:
        with open(json_file) as f:
            content = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_file} is not valid JSON ({err}): fix or regenerate it.") from err
    _check_coco_shape(json_file, content)
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
    return content


def _class_names(content: dict, negative_box_category: Optional[str] = None) -> List[str]:
    """The class names of a validated COCO JSON, ordered by category id; the negative-box
    category is none."""
    categories = sorted(content["categories"], key=lambda c: c["id"])
    return [c["name"] for c in categories if c["name"] != negative_box_category]


def _negative_category_ids(json_file: str, content: dict, category: str) -> Set[int]:
    """The JSON ids of the negative-box category (a name may be given to several ids)."""
    check_negative_box_category(
        f"COCO {json_file}",
        category,
        [c["name"] for c in content["categories"]],
        _class_names(content, category),
    )
    return {c["id"] for c in content["categories"] if c["name"] == category}


def _contiguous_ids(content: dict, negative_ids: Set[int]) -> Dict[int, int]:
    """JSON category id -> contiguous id, as ``load_coco_json`` maps them (by sorted id), with
    the negative-box category left out."""
    ids = sorted(c["id"] for c in content["categories"] if c["id"] not in negative_ids)
    return {category_id: index for index, category_id in enumerate(ids)}


def _missing_images(json_file: str, image_root: str, content: dict, policy: str) -> Set[str]:
    # The paths load_coco_json gives the dataset dicts' "file_name".
    paths = [os.path.join(image_root, image["file_name"]) for image in content["images"]]
    folder = f"IMAGE_ROOT {image_root} (the JSON's file names are relative to it)"
    return images_not_on_disk(f"COCO {json_file}", paths, policy, folder)


def _check_coco_shape(json_file: str, content) -> None:
    """The top level must be an object of lists (pycocotools and load_coco_json fail on
    anything else without naming the file); a list there is most often a results file."""
    if not isinstance(content, dict):
        hint = (
            " A list of detections is a COCO results file, not a dataset: give the instances "
            "file (e.g. instances_train.json)."
            if isinstance(content, list)
            else ""
        )
        raise ValueError(
            f"{json_file}: the top level is a JSON {_json_type(content)}; a COCO instances file "
            'is an object {"images": [...], "annotations": [...], "categories": [...]}.' + hint
        )
    for section in ("images", "annotations", "categories"):
        value = content.get(section)
        if value is not None and not isinstance(value, list):
            raise ValueError(
                f"{json_file}: '{section}' is a JSON {_json_type(value)}; it must be a list "
                "of objects."
            )


def _json_type(value) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


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


def load_coco_with_negatives(
    json_file: str,
    image_root: str,
    dataset_name: str,
    missing_images: str = "error",
    negative_box_category: Optional[str] = None,
) -> List[dict]:
    """Load a COCO JSON, keeping images without annotations as negatives.

    detectron2's ``load_coco_json`` already keeps every image of the JSON (an image without
    annotations gets an empty "annotations" list); this adds the checks it lacks.

    Args:
        json_file: COCO instances JSON.
        image_root: folder that the JSON's file names are relative to.
        dataset_name: metadata entry that ``load_coco_json`` fills with thing_classes and the
            map from JSON category ids to contiguous ids 0 .. C - 1.
        missing_images: what to do with an image of the JSON that is not on disk: "error"
            raises naming it, "drop" leaves it out with a warning that counts and names it.
        negative_box_category: the name of a category whose annotations are negative boxes
            (:mod:`.negative_boxes`), not objects; None = every category is a class.

    Returns:
        Dataset dicts with XYWH_ABS boxes and contiguous category ids; with
        ``negative_box_category``, each also has "negative_boxes" (XYXY_ABS, maybe empty).

    Raises:
        ValueError: see ``register_coco_with_negatives``.
    """
    content = _validate_coco_json(json_file)
    missing = _missing_images(json_file, image_root, content, missing_images)
    if negative_box_category is None:
        loaded = load_coco_json(json_file, image_root, dataset_name)
    else:
        loaded = _load_with_negative_boxes(
            json_file, image_root, dataset_name, content, negative_box_category
        )
    dataset_dicts = [d for d in loaded if d["file_name"] not in missing]
    num_classes = len(_class_names(content, negative_box_category))
    log_composition(f"COCO {json_file}", dataset_dicts, num_classes)
    return dataset_dicts


def _load_with_negative_boxes(
    json_file: str, image_root: str, dataset_name: str, content: dict, category: str
) -> List[dict]:
    """``load_coco_json`` with the annotations of ``category`` moved to "negative_boxes"."""
    negative_ids = _negative_category_ids(json_file, content, category)
    id_map = _contiguous_ids(content, negative_ids)
    # Without a dataset name load_coco_json keeps the JSON's category ids and sets no metadata:
    # its map would count the negative-box category as a class.
    dataset_dicts = load_coco_json(json_file, image_root)
    for record in dataset_dicts:
        _move_negative_boxes(record, negative_ids, id_map)
    MetadataCatalog.get(dataset_name).set(
        thing_classes=_class_names(content, category), thing_dataset_id_to_contiguous_id=id_map
    )
    return dataset_dicts


def _move_negative_boxes(record: dict, negative_ids: Set[int], id_map: Dict[int, int]) -> None:
    """Move a record's annotations of the negative-box category to its "negative_boxes"; give
    the others their contiguous category ids."""
    annotations, negative_boxes = [], []
    for annotation in record["annotations"]:
        if annotation["category_id"] in negative_ids:
            negative_boxes.append(_xyxy(annotation.get("bbox")))
        else:
            annotations.append({**annotation, "category_id": id_map[annotation["category_id"]]})
    record["annotations"], record[NEGATIVE_BOXES] = annotations, negative_boxes


def _xyxy(bbox):
    """A COCO bbox [x, y, width, height] as [x0, y0, x1, y1]; anything else as it is, for the
    mapper to report naming the image."""
    try:
        x, y, width, height = bbox
        return [x, y, x + width, y + height]
    except (TypeError, ValueError):
        return bbox


def register_coco_with_negatives(
    name: str,
    json_file: str,
    image_root: str,
    missing_images: str = "error",
    negative_box_category: Optional[str] = None,
) -> str:
    """Register a COCO JSON whose images without annotations are negative images.

    The JSON is read at once to validate it, to check that its images are on disk (see
    ``missing_images`` in :func:`load_coco_with_negatives`) and to set thing_classes. Metadata
    json_file is set because ``load_coco_json`` keeps the JSON's image ids, so COCOEvaluator
    can use the file; it is left out when images are dropped, since the evaluator would count
    the dropped images' objects as missed, and with ``negative_box_category``, since it would
    evaluate that category as a class (COCOEvaluator then converts the loaded dataset).

    Raises:
        ValueError: the JSON is not an object of lists, has no images, repeats an image id,
            has no categories or a malformed entry, or lists an image that is not on disk
            (``missing_images`` "error"; every image missing, under either policy), or
            ``negative_box_category`` names no category of it.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    content = _validate_coco_json(json_file)
    missing = _missing_images(json_file, image_root, content, missing_images)
    extra = {} if missing or negative_box_category else {"json_file": json_file}
    if negative_box_category is not None:
        negative_ids = _negative_category_ids(json_file, content, negative_box_category)
        extra["thing_dataset_id_to_contiguous_id"] = _contiguous_ids(content, negative_ids)
    DatasetCatalog.register(
        name,
        lambda: load_coco_with_negatives(
            json_file, image_root, name, missing_images, negative_box_category
        ),
    )
    classes = _class_names(content, negative_box_category)
    set_dataset_metadata(name, classes, image_root=image_root, **extra)
    return name
