"""COCO JSON with negative images: the JSON is validated before detectron2's ``load_coco_json``
reads it, so a malformed file fails naming the file, the entry and the field, and its images
are checked to be on disk when it is registered, not when the mapper first reaches one.

An image of the JSON without annotations is a negative image (see :mod:`.registration`).
"""

import json
import os
from typing import List, Set

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import load_coco_json

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


def _class_names(content: dict) -> List[str]:
    """The class names of a validated COCO JSON, ordered by category id."""
    return [c["name"] for c in sorted(content["categories"], key=lambda c: c["id"])]


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
    json_file: str, image_root: str, dataset_name: str, missing_images: str = "error"
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

    Returns:
        Dataset dicts with XYWH_ABS boxes and contiguous category ids.

    Raises:
        ValueError: see ``register_coco_with_negatives``.
    """
    content = _validate_coco_json(json_file)
    missing = _missing_images(json_file, image_root, content, missing_images)
    dataset_dicts = [
        d
        for d in load_coco_json(json_file, image_root, dataset_name)
        if d["file_name"] not in missing
    ]
    log_composition(f"COCO {json_file}", dataset_dicts, len(_class_names(content)))
    return dataset_dicts


def register_coco_with_negatives(
    name: str, json_file: str, image_root: str, missing_images: str = "error"
) -> str:
    """Register a COCO JSON whose images without annotations are negative images.

    The JSON is read at once to validate it, to check that its images are on disk (see
    ``missing_images`` in :func:`load_coco_with_negatives`) and to set thing_classes. Metadata
    json_file is set because ``load_coco_json`` keeps the JSON's image ids, so COCOEvaluator
    can use the file; it is left out when images are dropped, since the evaluator would count
    the dropped images' objects as missed.

    Raises:
        ValueError: the JSON is not an object of lists, has no images, repeats an image id,
            has no categories or a malformed entry, or lists an image that is not on disk
            (``missing_images`` "error"; every image missing, under either policy).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    content = _validate_coco_json(json_file)
    missing = _missing_images(json_file, image_root, content, missing_images)
    DatasetCatalog.register(
        name, lambda: load_coco_with_negatives(json_file, image_root, name, missing_images)
    )
    evaluation_json = {} if missing else {"json_file": json_file}
    set_dataset_metadata(name, _class_names(content), image_root=image_root, **evaluation_json)
    return name
