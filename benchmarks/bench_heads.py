"""Training cost of each hnm_d2 head mechanism against stock detectron2, side by side.

    python benchmarks/bench_heads.py [--heads faster|mask|cascade] [--iters 2] [--warmup 2] \
        [--repeats 16] [--threads 1] [--variants NAME ...] [--negative-share 0.25]

Every variant is the same small CPU Faster R-CNN (--config-file, default
configs/hnm_R18_FPN_cpu.yaml: ResNet-18 FPN, 64 FPN channels, BatchNorm, 128 RoIs and at most
500 proposals per image), built from the same seed (so with the same weights), trained on the
same seeded synthetic batches: 4 images of 256x256, each without objects with probability
--negative-share (default one in four), half of them flipped, drawn from a pool of 16 image
ids so that images come back (the buffer injects).
``--heads mask`` adds a Mask R-CNN mask head (and each object's mask to the batches),
``--heads cascade`` swaps in three-stage Cascade R-CNN heads (stock: CascadeROIHeads).
``--variants`` times some of the variants only (stock detectron2 always, the reference).

Time: one iteration is forward + backward + SGD step, inside an EventStorage. The optimizer's
learning rate is 0, so every variant keeps the same weights at every iteration. Per repeat,
each variant runs --iters iterations in turn (variants interleaved, in a rotating order, so
that a load change on the machine hits them all alike); a variant's figure is the median over
repeats of its mean iteration time, after --warmup iterations that are not timed.

Memory: each variant runs again in a fresh Python process: --warmup + --iters iterations, and
the figure is the growth of the process' peak resident set (Linux VmHWM) from just before the
first iteration to the end, i.e. the extra memory a training iteration needs on top of the
built model and the batches. The absolute peak RSS of that process is shown too.
"""

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

import hnm_d2  # noqa: F401  (registers the hnm_d2 classes)
from hnm_d2.config import add_hnm_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "hnm_R18_FPN_cpu.yaml")
IMAGE_SIZE = 256
BATCH_SIZE = 4
POOL_SIZE = 16

STOCK_CLASSES = [
    "MODEL.META_ARCHITECTURE",
    "GeneralizedRCNN",
    "MODEL.PROPOSAL_GENERATOR.NAME",
    "RPN",
]
# --heads -> (options on top of --config-file, the stock ROI heads the hnm_d2 ones replace)
HEADS = {
    "faster": ([], "StandardROIHeads"),
    "mask": (["MODEL.MASK_ON", "True"], "StandardROIHeads"),
    "cascade": (
        [
            "MODEL.ROI_HEADS.NAME",
            "HNMCascadeROIHeads",
            "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG",
            "True",
        ],
        "CascadeROIHeads",
    ),
}
ROI_OHEM = ["MODEL.HNM.ROI_OHEM.ENABLED", "True"]
RPN_OHEM = ["MODEL.HNM.RPN_OHEM.ENABLED", "True", "MODEL.HNM.RPN_OHEM.NEG_POS_RATIO", "3.0"]
# Recording from the first iteration: the cost of a working buffer, not of its warm-up.
BUFFER = ["MODEL.HNM.BUFFER.ENABLED", "True", "MODEL.HNM.BUFFER.WARMUP_ITERS", "0"]
BG_WEIGHT = ["MODEL.HNM.ROI_BG_WEIGHT", "0.5", "MODEL.HNM.RPN_BG_WEIGHT", "0.5"]
NEGATIVE_TOPK = ["MODEL.HNM.NEGATIVE_IMAGE_LOSS.ENABLED", "True"]
# name -> config options on top of --config-file (whose classes are the hnm_d2 ones).
VARIANTS = {
    "stock detectron2": STOCK_CLASSES,
    "hnm_d2, all off": [],
    "ROI OHEM": ROI_OHEM,
    "RPN OHEM": RPN_OHEM,
    "buffer": BUFFER,
    "bg down-weighting": BG_WEIGHT,
    "all together": ROI_OHEM + RPN_OHEM + BUFFER + BG_WEIGHT,
    "negative-image top-k loss": NEGATIVE_TOPK,
}
STOCK = "stock detectron2"
# Variants a head type refuses: the negative-image loss is not built for a cascade.
UNSUPPORTED = {"cascade": {"negative-image top-k loss"}}


def build_cfg(config_file, heads, variant):
    cfg = get_cfg()
    add_hnm_config(cfg)
    cfg.merge_from_file(config_file)
    head_options, stock_heads = HEADS[heads]
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""] + head_options)
    cfg.merge_from_list(VARIANTS[variant])
    if variant == STOCK:
        cfg.MODEL.ROI_HEADS.NAME = stock_heads
    return cfg


def build_seeded_model(config_file, heads, variant):
    torch.manual_seed(0)
    model = build_model(build_cfg(config_file, heads, variant))
    model.train()
    # lr 0: the step runs (its cost counts) but the weights stay those of the seeded build.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    return model, optimizer


def synthetic_image(generator, with_masks, negative_share):
    """A textured 256x256 image with 1-3 bright boxes, or none with probability
    ``negative_share``; each box is its object's mask too when ``with_masks``."""
    image = torch.rand(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 96
    has_objects = torch.rand(1, generator=generator).item() >= negative_share
    num_boxes = int(torch.randint(1, 4, (1,), generator=generator)) if has_objects else 0
    boxes = []
    for _ in range(num_boxes):
        x0, y0 = torch.randint(0, IMAGE_SIZE - 64, (2,), generator=generator).tolist()
        w, h = torch.randint(16, 64, (2,), generator=generator).tolist()
        image[:, y0 : y0 + h, x0 : x0 + w] += 128
        boxes.append([x0, y0, x0 + w, y0 + h])
    instances = Instances((IMAGE_SIZE, IMAGE_SIZE))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.zeros(num_boxes, dtype=torch.int64)
    if with_masks:
        masks = torch.zeros(num_boxes, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes):
            mask[y0:y1, x0:x1] = True
        instances.gt_masks = BitMasks(masks)
    return image, instances


def synthetic_batches(num_batches, heads, negative_share, seed=0):
    """Batches of 4 inputs, as the hnm_d2 mapper makes them, from a pool of 16 image ids."""
    generator = torch.Generator().manual_seed(seed)
    pool = [synthetic_image(generator, heads == "mask", negative_share) for _ in range(POOL_SIZE)]
    batches = []
    for _ in range(num_batches):
        ids = torch.randperm(POOL_SIZE, generator=generator)[:BATCH_SIZE].tolist()
        batch = []
        for image_id in ids:
            image, instances = pool[image_id]
            flip = torch.rand(1, generator=generator).item() < 0.5
            if flip:
                image, instances = image.flip(-1), flipped(instances)
            tfm = T.HFlipTransform(IMAGE_SIZE) if flip else T.NoOpTransform()
            batch.append(
                {
                    "image": image,
                    "instances": instances,
                    "image_id": image_id,
                    "file_name": f"synthetic_{image_id}.png",
                    "transforms": T.TransformList([tfm]),
                }
            )
        batches.append(batch)
    return batches


def flipped(instances):
    boxes = instances.gt_boxes.tensor
    mirrored = torch.stack(
        [IMAGE_SIZE - boxes[:, 2], boxes[:, 1], IMAGE_SIZE - boxes[:, 0], boxes[:, 3]], dim=1
    )
    result = Instances(instances.image_size, gt_classes=instances.gt_classes)
    result.gt_boxes = Boxes(mirrored)
    if instances.has("gt_masks"):
        result.gt_masks = BitMasks(instances.gt_masks.tensor.flip(-1))
    return result


def train_step(model, optimizer, batch):
    losses = model(batch)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def time_variants(config_file, args):
    """Median over repeats of each variant's mean iteration time, in seconds."""
    models = {name: build_seeded_model(config_file, args.heads, name) for name in args.variants}
    batches = synthetic_batches(
        args.warmup + args.iters * args.repeats, args.heads, args.negative_share
    )
    storages = {name: EventStorage() for name in args.variants}

    def run(name, batch_slice):
        model, optimizer = models[name]
        storage = storages[name]
        with storage:
            start = time.perf_counter()
            for batch in batch_slice:
                train_step(model, optimizer, batch)
                storage.step()
            return (time.perf_counter() - start) / max(len(batch_slice), 1)

    names = list(args.variants)
    for name in names:
        run(name, batches[: args.warmup])
    per_repeat = {name: [] for name in names}
    for r in range(args.repeats):
        start = args.warmup + r * args.iters
        # A different variant goes first in each repeat: none always runs right after another.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            per_repeat[name].append(run(name, batches[start : start + args.iters]))
    notes = {name: _notes(storages[name]) for name in names}
    return {name: statistics.median(times) for name, times in per_repeat.items()}, notes


def _notes(storage):
    """What the mechanisms did, from their hnm/ scalars (averaged over the run)."""
    histories = storage.histories()
    shown = [
        ("hnm/ohem_kept_neg", "OHEM neg/img"),
        ("stage0/hnm/ohem_kept_neg", "stage-0 OHEM neg/img"),
        ("hnm/rpn_ohem_neg", "RPN neg/img"),
        ("hnm/buffer_size", "buffer size"),
        ("hnm/buffer_injected", "injected/img"),
        ("hnm/neg_topk_images", "negative images"),
    ]
    return ", ".join(
        f"{label} {histories[key].avg(len(histories[key].values())):.1f}"
        for key, label in shown
        if key in histories
    )


def memory_probe(config_file, variant, args):
    """Run in a fresh process: peak RSS growth over the training iterations, in MiB."""
    model, optimizer = build_seeded_model(config_file, args.heads, variant)
    batches = synthetic_batches(args.warmup + args.iters, args.heads, args.negative_share)
    before = peak_rss_mib()
    with EventStorage() as storage:
        for batch in batches:
            train_step(model, optimizer, batch)
            storage.step()
    after = peak_rss_mib()
    return {"growth_mib": after - before, "peak_mib": after}


def peak_rss_mib():
    """This process' peak resident set size (Linux VmHWM), in MiB.

    Not getrusage's ru_maxrss: Linux carries that over from the parent through fork and exec,
    so a probe started by a bigger parent would report the parent's peak.
    """
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure_memory(config_file, variant, args):
    command = [
        sys.executable,
        __file__,
        "--config-file",
        config_file,
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--heads",
        args.heads,
        "--negative-share",
        str(args.negative_share),
        "--memory-probe",
        variant,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def print_table(times, memory, notes):
    rows = [
        "| variant | s/iter | time vs stock | peak RSS growth (MiB) | vs stock | peak RSS (MiB) "
        "| what the mechanism did (mean per iteration) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in times:
        rows.append(
            f"| {name} | {times[name]:.3f} | {times[name] / times[STOCK]:.3f}x "
            f"| {memory[name]['growth_mib']:.0f} "
            f"| {memory[name]['growth_mib'] / memory[STOCK]['growth_mib']:.3f}x "
            f"| {memory[name]['peak_mib']:.0f} | {notes[name]} |"
        )
    print("\n".join(rows))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=os.path.normpath(DEFAULT_CONFIG))
    parser.add_argument("--heads", choices=list(HEADS), default="faster", help="ROI heads")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--repeats", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="time these only (and stock)"
    )
    parser.add_argument(
        "--negative-share", type=float, default=0.25, help="share of images without objects"
    )
    parser.add_argument("--memory-probe", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen = args.variants or [v for v in VARIANTS if v not in UNSUPPORTED.get(args.heads, ())]
    args.variants = [STOCK] + [v for v in chosen if v != STOCK]
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # detectron2's build-time notes would clutter the table
    if args.memory_probe:
        print(json.dumps(memory_probe(args.config_file, args.memory_probe, args)))
        return
    times, notes = time_variants(args.config_file, args)
    memory = {name: measure_memory(args.config_file, name, args) for name in args.variants}
    print(
        f"{args.config_file}, {args.heads} heads, batch {BATCH_SIZE} x {IMAGE_SIZE}x{IMAGE_SIZE} "
        f"({args.negative_share:g} of them without objects), "
        f"{args.threads} thread(s), {args.repeats} repeats x {args.iters} iterations "
        f"after {args.warmup} warm-up"
    )
    print_table(times, memory, notes)


if __name__ == "__main__":
    main()
