"""mining/to_annotate.json: the mined images a person judged to hold an object, as a COCO file.

Its annotations are the model's detections on those images ("bbox" XYWH with its "score"):
pre-annotations for a person to correct in an annotation tool (CVAT, Label Studio and FiftyOne
import COCO) before the images join the annotated training set. "file_name" is relative to the
images' common folder, which "info" names as "images_root": import the images from there (CVAT
matches images by that name; FiftyOne: ``data_path=images_root``). Category ids are the training
set's own where it was registered from COCO, else class index + 1.
"""

import os

from ..utils.images import upright_size

__all__ = ["to_annotate_coco"]


def _categories(metadata, images):
    """The COCO categories, and class index -> category id."""
    names = metadata.get("thing_classes", None)
    if names is None:  # no class names registered: name them by index
        classes = {
            c for image in images for c in (image.get("detections") or {}).get("classes", [])
        }
        names = [f"class_{c}" for c in range(max(classes, default=-1) + 1)]
    to_dataset_id = {c: d for d, c in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()}
    ids = [to_dataset_id.get(c, c + 1) for c in range(len(names))]
    return [{"id": i, "name": name} for i, name in zip(ids, names)], ids


def _image_entry(index, image, root):
    try:
        width, height = upright_size(image["file_name"])
    except OSError as e:
        raise ValueError(
            f"Mined image {image['file_name']}, judged to hold an object, cannot be read for "
            f"mining/to_annotate.json ({e}): restore the file, or judge it again."
        ) from None
    file_name = os.path.relpath(os.path.abspath(image["file_name"]), root)
    return {"id": index, "file_name": file_name, "width": width, "height": height}


def _annotations(image_id, detections, category_ids, first_id):
    annotations = []
    for box, score, cls in zip(detections["boxes"], detections["scores"], detections["classes"]):
        x0, y0, x1, y1 = box
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": image_id,
                "category_id": category_ids[cls],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
                "score": score,
            }
        )
    return annotations


def to_annotate_coco(images, metadata, source):
    """The COCO file of the images to annotate, their detections as pre-annotations.

    Args:
        images (list[dict]): the chosen images' entries: "file_name" and "detections" ("boxes"
            XYXY_ABS, "scores", "classes"), which may be absent.
        metadata (Metadata): the training set's: "thing_classes" and, for a COCO dataset,
            "thing_dataset_id_to_contiguous_id".
        source (str): the mining run's folder, named in "info".

    Returns:
        dict: "info", "images" (ids from 1), "annotations" (with "score") and "categories".

    Raises:
        ValueError: an image file cannot be read (its size is needed).
    """
    folders = [os.path.dirname(os.path.abspath(image["file_name"])) for image in images]
    root = os.path.commonpath(folders) if folders else None
    categories, category_ids = _categories(metadata, images)
    coco_images, annotations = [], []
    for index, image in enumerate(images, start=1):
        coco_images.append(_image_entry(index, image, root))
        detections = image.get("detections")
        if detections:
            annotations += _annotations(index, detections, category_ids, len(annotations) + 1)
    info = {
        "description": "Mined images judged to hold an object; annotations are the model's "
        "detections (with their score), to correct",
        "images_root": root,
        "mining_run": os.path.abspath(source),
    }
    return {
        "info": info,
        "images": coco_images,
        "annotations": annotations,
        "categories": categories,
    }
