#!/usr/bin/env python
"""How fast pooled RoI features drift during training: the premise of the feature memory.

The feature memory (MODEL.HNM.FEATURE_MEMORY) re-feeds features pooled by the backbone of up
to MAX_AGE iterations ago. Cross-batch memory (Wang et al., CVPR 2020) holds that such features
drift slowly once training is past its first phase. This measures it: one training run saves a
checkpoint every ``--every`` iterations; the pooled features of fixed boxes on fixed test
images are computed with each checkpoint's backbone, and for every checkpoint t and gap d the
relative change ||f(t + d) - f(t)|| / ||f(t + d)|| (mean over boxes) is printed as a table.

    .venv/bin/python benchmarks/feature_drift.py --output output/drift --iters 400 --every 25
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import DatasetCatalog, DatasetMapper  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes  # noqa: E402

from hnm_d2.engine import hnm_argument_parser, register_datasets, setup  # noqa: E402

CONFIG = "configs/demo_synthetic_R18_FPN_cpu.yaml"
# The demo config's hnm_d2 model has the box buffer; the drift is measured without it.
NO_BUFFER = ["MODEL.HNM.BUFFER.ENABLED", "False"]


def train(args):
    command = [
        sys.executable, "train_net.py", "--config-file", CONFIG, "--synthetic", args.data,
        "SOLVER.MAX_ITER", str(args.iters), "SOLVER.CHECKPOINT_PERIOD", str(args.every),
        "DATASETS.TEST", "()", "OUTPUT_DIR", args.output, "SEED", "0", *NO_BUFFER,
    ]  # fmt: skip
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)


def fixed_boxes(height, width, generator, count):
    """``count`` random boxes of 8 to 40 px inside an image, shape (count, 4)."""
    xy = torch.rand(count, 2, generator=generator) * torch.tensor([width - 40, height - 40])
    size = 8 + torch.rand(count, 2, generator=generator) * 32
    return torch.cat([xy, xy + size], dim=1)


def pooled_features(model, inputs, boxes):
    """The box pooler's output for ``boxes`` (image coordinates of the resized inputs)."""
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        features = model.backbone(images.tensor)
        heads = model.roi_heads
        return heads.box_pooler([features[f] for f in heads.box_in_features], boxes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="output/drift")
    # Not the demo's folder: --synthetic writes the default split sizes, not the demo's.
    parser.add_argument("--data", default="output/synthetic")
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--gaps", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    if not (Path(args.output) / "model_final.pth").exists():
        train(args)
    cfg_args = hnm_argument_parser().parse_args(
        ["--config-file", CONFIG, "--synthetic", args.data, *NO_BUFFER, "OUTPUT_DIR", args.output]
    )
    register_datasets(cfg_args)
    cfg = setup(cfg_args)
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.images]]
    generator = torch.Generator().manual_seed(0)
    boxes = [Boxes(fixed_boxes(*x["image"].shape[1:], generator, 16)) for x in inputs]

    checkpoints = {}
    for path in sorted(Path(args.output).glob("model_*.pth")):
        match = re.fullmatch(r"model_(\d+)\.pth", path.name)
        if match:
            checkpoints[int(match.group(1)) + 1] = path
    model = build_model(cfg)
    model.eval()
    features = {}
    for iteration, path in sorted(checkpoints.items()):
        DetectionCheckpointer(model).load(str(path))
        features[iteration] = pooled_features(model, inputs, boxes).flatten(1)

    print(f"Relative drift of pooled RoI features over d iterations ({len(inputs)} images x 16 "
          f"boxes), ||f(t + d) - f(t)|| / ||f(t + d)||, mean over boxes:\n")  # fmt: skip
    print("| t | " + " | ".join(f"d = {d}" for d in args.gaps) + " |")
    print("|---|" + "---|" * len(args.gaps))
    for t in sorted(features):
        cells = []
        for d in args.gaps:
            if t + d in features:
                later = features[t + d]
                drift = (later - features[t]).norm(dim=1) / later.norm(dim=1).clamp(min=1e-12)
                cells.append(f"{drift.mean():.3f}")
            else:
                cells.append("")
        print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
