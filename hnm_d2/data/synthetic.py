"""Deterministic synthetic detection data with look-alike distractors and negative images.

One class, "target": a filled disk with a dark dot at its centre. Every image also holds
distractors built to be confused with it, each lacking exactly one of the target's two cues:

* "disk": the same filled disk without the dot (round, no dot);
* "square": a filled square of the same extent with the same dark dot (dot, not round);
* "ring": a disk outline whose hollow middle shows the background (round, dark-ish centre
  on dark backgrounds, but no dot).

Within an image all shapes share one colour and one size range, so colour and size say
nothing; only "round and dotted" does. Backgrounds are darker than the shapes and textured
(Gaussian noise, a linear gradient or sinusoidal stripes, plus mild noise) so that neither
edges nor flat regions are free cues. Positive images hold 1-4 targets and 0-4 distractors;
negative images hold 1-5 distractors and no target, i.e. they are hard negatives.

Shapes are placed one per cell of a 3x3 grid (at most 9 per image), so they never overlap and
every box lies inside the image. Each image is drawn from its own random generator seeded by
(seed, split, index): the same arguments give byte-identical PNG files and JSON.

Each target's annotation carries its box and its disk as a polygon (for Mask R-CNN). The COCO
JSON lists positive images first, then negatives (no annotations), with image ids
``name_id_offset("synthetic_" + split) + index`` so the splits can be trained together (e.g. the
mining loop adds pool images to the training set) without clashing ids.
"""

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from .coco import register_coco_with_negatives
from .registration import name_id_offset

__all__ = [
    "DEFAULT_SPLIT_SIZES",
    "DEMO_SPLIT_SIZES",
    "generate_synthetic_coco",
    "register_synthetic_splits",
]

logger = logging.getLogger(__name__)

# Bump when the drawing changes, so existing files made by older code are regenerated.
GENERATOR_VERSION = 2  # 2: targets have a polygon "segmentation" (Mask R-CNN)
CATEGORY = {"id": 1, "name": "target"}
DISTRACTOR_KINDS = ("disk", "square", "ring")
# split: (number of positive images, number of negative images)
# val: to choose settings on, never on test.
DEFAULT_SPLIT_SIZES = {"train": (48, 24), "val": (16, 16), "test": (16, 16), "pool": (0, 48)}
# `make demo` and the sweep that chooses its setting: the same training data, and val and test
# splits large enough that a difference in false alarms at matched recall is not a coin flip
# (on 16 negative images one alarm is 0.0625 per image); they cost evaluation time only.
DEMO_SPLIT_SIZES = {**DEFAULT_SPLIT_SIZES, "val": (100, 300), "test": (100, 300)}

_GRID = 3
_RADIUS_RANGE = (0.06, 0.10)  # shape radius as a share of the image size
_DOT_SHARE = 0.35  # dot radius / shape radius
_RING_HOLE_SHARE = 0.55  # hole radius / ring radius


# ------------------------------------------------------------------------------ drawing


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark textured background, float array of shape (size, size, 3) in [0, 255]."""
    base = rng.uniform(30, 110, size=3)
    y, x = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, np.pi)
    along = x * np.cos(angle) + y * np.sin(angle)
    kind = rng.integers(3)
    if kind == 0:
        pattern = rng.normal(0, 18, size=(size, size))
    elif kind == 1:
        pattern = rng.uniform(30, 60) * (along - along.mean())
    else:
        period = rng.uniform(0.06, 0.16)
        pattern = 20 * np.sin(2 * np.pi * along / period)
    image = base + pattern[..., None] + rng.normal(0, 6, size=(size, size, 3))
    return np.clip(image, 0, 255)


def _draw_shape(image, kind, cx, cy, radius, colour, dot_colour) -> None:
    """Draw one shape in place on ``image``, a float array of shape (H, W, 3).

    Args:
        kind: "target" or one of DISTRACTOR_KINDS.
        cx, cy, radius: centre and radius (half the side, for a square) in pixels.
        colour, dot_colour: RGB arrays of shape (3,) for the body and the centre dot.
    """
    size = image.shape[0]
    # Pixel (row i, column j) covers [j, j + 1) x [i, i + 1); test its centre.
    y, x = np.mgrid[0:size, 0:size] + 0.5
    distance = np.hypot(x - cx, y - cy)
    if kind == "square":
        image[(np.abs(x - cx) <= radius) & (np.abs(y - cy) <= radius)] = colour
    elif kind == "ring":
        image[(distance <= radius) & (distance >= _RING_HOLE_SHARE * radius)] = colour
    else:
        image[distance <= radius] = colour
    if kind in ("target", "square"):
        image[distance <= _DOT_SHARE * radius] = dot_colour


def _place_shapes(rng: np.random.Generator, size: int, kinds: List[str]) -> List[dict]:
    """Centre and radius for each kind, one per grid cell, inside the image."""
    cell = size / _GRID
    cells = rng.permutation(_GRID * _GRID)[: len(kinds)]
    shapes = []
    for kind, cell_index in zip(kinds, cells.tolist()):
        radius = rng.uniform(*_RADIUS_RANGE) * size
        row, column = divmod(cell_index, _GRID)
        cx = column * cell + rng.uniform(radius, cell - radius)
        cy = row * cell + rng.uniform(radius, cell - radius)
        shapes.append({"kind": kind, "cx": cx, "cy": cy, "radius": radius})
    return shapes


def _shape_kinds(rng: np.random.Generator, positive: bool) -> List[str]:
    num_targets = int(rng.integers(1, 5)) if positive else 0
    num_distractors = int(rng.integers(0, 5)) if positive else int(rng.integers(1, 6))
    distractors = rng.choice(DISTRACTOR_KINDS, size=num_distractors).tolist()
    return ["target"] * num_targets + distractors


def _render_image(rng: np.random.Generator, size: int, positive: bool):
    """Returns (uint8 array of shape (size, size, 3), list of target boxes as XYWH_ABS)."""
    image = _texture(rng, size)
    colour = rng.uniform(150, 255, size=3)
    dot_colour = rng.uniform(0, 35, size=3)
    boxes = []
    for shape in _place_shapes(rng, size, _shape_kinds(rng, positive)):
        cx, cy, r = shape["cx"], shape["cy"], shape["radius"]
        _draw_shape(image, shape["kind"], cx, cy, r, colour, dot_colour)
        if shape["kind"] == "target":
            boxes.append([round(cx - r, 2), round(cy - r, 2), round(2 * r, 2), round(2 * r, 2)])
    return image.round().astype(np.uint8), boxes


# ------------------------------------------------------------------------- COCO output


def _disk_polygon(box: List[float], num_vertices: int = 16) -> List[float]:
    """The target's disk (inscribed in its XYWH box) as a COCO polygon [x0, y0, x1, y1, ...],
    so that Mask R-CNN configs train on the synthetic data too."""
    x, y, w, h = box
    angles = np.linspace(0, 2 * np.pi, num_vertices, endpoint=False)
    xs = x + w / 2 * (1 + np.cos(angles))
    ys = y + h / 2 * (1 + np.sin(angles))
    return [round(float(v), 2) for v in np.stack([xs, ys], axis=1).reshape(-1)]


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index])


def _existing_params(json_path: Path) -> Optional[dict]:
    if not json_path.exists():
        return None
    with open(json_path) as f:
        return json.load(f).get("info", {}).get("hnm_d2_synthetic")


def _write_images(image_dir: Path, params: dict) -> Tuple[List[dict], List[dict]]:
    """Write every image of a split; returns the COCO "images" and "annotations" lists."""
    split, size, num_positive = params["split"], params["image_size"], params["num_positive"]
    id_offset = name_id_offset(f"synthetic_{split}")
    images, annotations = [], []
    for index in range(num_positive + params["num_negative"]):
        pixels, boxes = _render_image(
            _image_rng(params["seed"], split, index), size, positive=index < num_positive
        )
        file_name = f"{split}_{index:05d}.png"
        Image.fromarray(pixels).save(image_dir / file_name, format="PNG")
        image_id = id_offset + index
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
        for box in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": CATEGORY["id"],
                    "bbox": box,
                    "segmentation": [_disk_polygon(box)],
                    "area": round(box[2] * box[3], 2),
                    "iscrowd": 0,
                }
            )
    return images, annotations


def generate_synthetic_coco(
    output_dir: str,
    num_positive: int,
    num_negative: int,
    image_size: int = 128,
    seed: int = 0,
    split: str = "train",
) -> str:
    """Write one split: PNG images under ``output_dir/split/`` and ``output_dir/split.json``.

    Does nothing if the JSON exists and was made with the same arguments (recorded in its
    "info"); the JSON is written last and atomically, so its presence means the images are
    complete.

    Args:
        output_dir: folder for the split's JSON and image folder.
        num_positive: images with 1-4 targets (and 0-4 distractors).
        num_negative: images with 1-5 distractors and no target.
        image_size: side of the square images in pixels (at least 32).
        seed: seed of the generator.
        split: split name; also part of every image's seed and file name.

    Returns:
        Path of the COCO JSON (category 1 "target"; negative images have no annotations).
    """
    if image_size < 32 or num_positive < 0 or num_negative < 0 or num_positive + num_negative == 0:
        raise ValueError(
            f"generate_synthetic_coco: image_size {image_size} must be >= 32 and the image "
            f"counts ({num_positive} positive, {num_negative} negative) >= 0 with at least one."
        )
    params = {
        "version": GENERATOR_VERSION,
        "num_positive": num_positive,
        "num_negative": num_negative,
        "image_size": image_size,
        "seed": seed,
        "split": split,
    }
    json_path = Path(output_dir) / f"{split}.json"
    if _existing_params(json_path) == params:
        return str(json_path)
    image_dir = Path(output_dir) / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = _write_images(image_dir, params)
    content = {
        "info": {"description": "hnm_d2 synthetic targets", "hnm_d2_synthetic": params},
        "images": images,
        "annotations": annotations,
        "categories": [CATEGORY],
    }
    temporary = json_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(content))
    os.replace(temporary, json_path)
    logger.info(
        f"Wrote synthetic split {split}: {num_positive} positive and {num_negative} negative "
        f"images, {len(annotations)} targets, to {json_path}."
    )
    return str(json_path)


def register_synthetic_splits(
    root: str,
    seed: int = 0,
    image_size: int = 128,
    sizes: Optional[Dict[str, Tuple[int, int]]] = None,
) -> Dict[str, str]:
    """Generate (if needed) and register the synthetic splits as "synthetic_<split>".

    Args:
        root: folder for the generated data.
        seed: seed of the generator.
        image_size: side of the square images in pixels.
        sizes: split -> (num_positive, num_negative); None = DEFAULT_SPLIT_SIZES, i.e. train
            48 + 24, val and test 16 + 16 each, and pool 0 + 48 (negatives for the image-level
            mining loop); DEMO_SPLIT_SIZES for `make demo`'s larger val and test.

    Returns:
        split -> registered dataset name.

    Raises:
        ValueError: a name is already registered with other files.
    """
    names = {}
    for split, (num_positive, num_negative) in (sizes or DEFAULT_SPLIT_SIZES).items():
        json_file = generate_synthetic_coco(
            root, num_positive, num_negative, image_size, seed, split
        )
        names[split] = _register_once(f"synthetic_{split}", json_file, str(Path(root) / split))
    return names


def _register_once(name: str, json_file: str, image_root: str) -> str:
    if name not in DatasetCatalog.list():
        return register_coco_with_negatives(name, json_file, image_root)
    metadata = MetadataCatalog.get(name)
    registered = (metadata.get("json_file"), metadata.get("image_root"))
    if registered != (json_file, image_root):
        raise ValueError(
            f"Dataset {name} is already registered with {registered}, not {json_file} and "
            f"{image_root}. Use one synthetic root per process, or DatasetCatalog.remove({name!r})"
            f" and MetadataCatalog.remove({name!r}) first."
        )
    return name
