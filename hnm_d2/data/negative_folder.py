"""A folder of negative images: every image file directly in the folder, without annotations.

Images are numbered in sorted file order from an id offset, by default the dataset name's
:func:`~.registration.name_id_offset`.
"""

import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence

from detectron2.data import DatasetCatalog

from .registration import (
    IMAGE_EXTENSIONS,
    image_size_after_exif,
    name_id_offset,
    set_dataset_metadata,
)

__all__ = ["load_negative_folder", "register_negative_folder"]

logger = logging.getLogger(__name__)


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
        height, width = image_size_after_exif(path)
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
        id_offset: first image id; None = ``name_id_offset(name)`` (see :mod:`.registration`).
    """
    folder = os.fspath(folder)
    offset = name_id_offset(name) if id_offset is None else id_offset
    DatasetCatalog.register(name, lambda: load_negative_folder(folder, offset))
    set_dataset_metadata(name, thing_classes, image_root=folder)
    return name
