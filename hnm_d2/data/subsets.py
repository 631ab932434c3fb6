"""Positive-only and negative-only views of a registered dataset.

The image-level mining recipe starts from the positive images of a training set and draws from
a pool of its negative images; the evaluator reports AP on the positive test images alone.
Each needs a view of a registered dataset filtered by whether images hold annotations.
"""

import logging

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["is_negative_image", "register_subset", "SUBSET_KINDS"]

logger = logging.getLogger(__name__)

SUBSET_KINDS = ("positives", "negatives")

# Metadata a view shares with its parent. json_file is left out on purpose: COCOEvaluator
# would evaluate against the parent's full JSON instead of the filtered images.
_SHARED_METADATA = ("thing_classes", "thing_dataset_id_to_contiguous_id", "evaluator_type")


def is_negative_image(dataset_dict: dict) -> bool:
    """Whether a dataset dict is a negative image: its "annotations" are missing or empty.

    An image with crowd regions only is not negative: it shows objects, and COCO evaluation
    ignores detections on crowd regions instead of counting them as false alarms
    (NegativeImageEvaluator uses the same rule).
    """
    return not dataset_dict.get("annotations")


def _filtered_dicts(parent, kind):
    keep_negatives = kind == "negatives"
    dicts = [d for d in DatasetCatalog.get(parent) if is_negative_image(d) == keep_negatives]
    if not dicts:
        raise ValueError(
            f"Dataset '{parent}' has no {kind}: the view of its {kind} would be empty. "
            f"Check the dataset's annotations, or do not ask for its {kind}."
        )
    return dicts


def register_subset(name, parent, kind):
    """Register ``name`` as the positive or negative images of the registered ``parent``.

    Loading is lazy (on ``DatasetCatalog.get(name)``), like any detectron2 dataset. Registering
    the same view again is a no-op, so every worker process may call this.

    Args:
        name (str): name of the view.
        parent (str): a registered dataset.
        kind (str): "positives" (images with annotations) or "negatives" (without).

    Returns:
        str: ``name``.
    """
    if kind not in SUBSET_KINDS:
        raise ValueError(f"Subset kind {kind!r} of '{name}' is invalid: use one of {SUBSET_KINDS}.")
    if parent not in DatasetCatalog.list():
        raise KeyError(
            f"Cannot register '{name}' as the {kind} of '{parent}': '{parent}' is not a "
            "registered dataset. Register it first (e.g. --register-voc/--register-coco/"
            "--register-yolo)."
        )
    if name in DatasetCatalog.list():
        return name
    DatasetCatalog.register(name, lambda: _filtered_dicts(parent, kind))
    parent_meta = MetadataCatalog.get(parent)
    shared = {k: getattr(parent_meta, k) for k in _SHARED_METADATA if hasattr(parent_meta, k)}
    MetadataCatalog.get(name).set(**shared)
    logger.info("Registered '%s': the %s of '%s'.", name, kind, parent)
    return name
