#!/usr/bin/env python
"""What the box buffer holds at the end of a run: entries on negative and on positive training
images, and how much the latter overlap an annotated object.

Reads the buffer table from a checkpoint of a run with the box buffer (MODEL.HNM.BUFFER) and the
VOC annotations of its training split, and prints the counts and the quantiles of each entry's
IoU with the nearest object of its image (original image coordinates, as the buffer stores).

    .venv/bin/python benchmarks/buffer_audit.py \
        output/bench/bccd_val/buffer_boxes_seed0/model_final.pth \
        --voc-root ../shared/data/bccd --split train --class-name Platelets
"""

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_iou

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hnm_d2.modeling.buffer import image_key  # noqa: E402

TABLE_KEY = "roi_heads.hard_negative_buffer._extra_state"


def objects_by_key(voc_root: Path, split: str, class_name: str):
    """Buffer key of each training image -> its objects of ``class_name``, XYXY (n, 4)."""
    objects = {}
    for name in (voc_root / "ImageSets" / "Main" / f"{split}.txt").read_text().split():
        boxes = []
        for obj in ET.parse(voc_root / "Annotations" / f"{name}.xml").findall("object"):
            if obj.find("name").text.strip() == class_name:
                box = obj.find("bndbox")
                boxes.append([float(box.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax")])
        key = image_key(str(voc_root / "JPEGImages" / f"{name}.jpg"))
        objects[key] = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return objects


def buffer_entries(checkpoint: Path):
    """(keys, boxes (n, 4), scores) of the valid entries of the checkpoint's buffer table."""
    table = torch.load(checkpoint, map_location="cpu")["model"][TABLE_KEY]
    table = table[table[:, 0] > 0]
    keys = ((table[:, 1].long() << 32) | table[:, 2].long()).tolist()
    return keys, table[:, 3:7].float(), table[:, 7]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--voc-root", type=Path, default=REPO.parent / "shared/data/bccd")
    parser.add_argument("--split", default="train")
    parser.add_argument("--class-name", default="Platelets")
    args = parser.parse_args()
    objects = objects_by_key(args.voc_root.resolve(), args.split, args.class_name)
    keys, boxes, scores = buffer_entries(args.checkpoint)
    overlaps, on_negatives = [], 0
    for key, box in zip(keys, boxes):
        if len(objects[key]) == 0:
            on_negatives += 1
        else:
            overlaps.append(float(pairwise_iou(Boxes(objects[key]), Boxes(box[None])).max()))
    print(f"{len(keys)} entries: {on_negatives} on negative images, {len(overlaps)} on positive")
    if overlaps:
        quantiles = np.percentile(overlaps, [10, 50, 90]).round(2).tolist()
        print(f"IoU with the nearest object, quantiles 10/50/90%: {quantiles}")
        print(f"entries at IoU > 0.1 with an object: {sum(o > 0.1 for o in overlaps)}")
    if len(scores):
        print(
            f"scores, quantiles 10/50/90%: {np.percentile(scores, [10, 50, 90]).round(2).tolist()}"
        )


if __name__ == "__main__":
    main()
