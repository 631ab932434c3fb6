"""Negative boxes ("this looks like an object, and is not"): the loaders fill the dataset-dict
field from a category of the file, the mapper validates and transforms them like annotations,
and the ROI heads train each as a background RoI every time its image is seen."""

import argparse
import logging

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, pairwise_iou
from detectron2.utils.events import EventStorage
from PIL import Image
from test_cascade import cascade_cfg
from test_datasets import write_coco, write_images
from test_heads import (
    assert_same_losses,
    batch,
    grid_proposals,
    instances,
    rpn_like_proposals,
    seeded_losses,
    seeded_model,
    tiny_cfg,
)
from test_yolo import make_yolo_tree

from hnm_d2.data import (
    InvalidAnnotationError,
    NegativeAwareDatasetMapper,
    add_registration_arguments,
    build_hnm_train_loader,
    is_negative_image,
    load_voc_with_negatives,
    load_yolo_with_negatives,
    register_coco_with_negatives,
    register_from_args,
)
from hnm_d2.modeling import image_key

WIDTH, HEIGHT = 64, 48
OBJECT = {"bbox": [4.0, 6.0, 30.0, 40.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}
RESIZE_AND_FLIP = [T.ResizeShortestEdge(24, max_size=1000), T.RandomFlip(prob=1.0)]
# The top-left 30 x 20 px: a box below or right of it is cropped away.
CROP = [T.CropTransform(0, 0, 30, 20)]


def make_mapper(augmentations, policy="error"):
    return NegativeAwareDatasetMapper(
        True,
        augmentations=augmentations,
        image_format="BGR",
        invalid_annotation_policy=policy,
        num_classes=1,
    )


def make_dict(path, negative_boxes, annotations=(OBJECT,)):
    return {
        "file_name": str(path),
        "image_id": 7,
        "height": HEIGHT,
        "width": WIDTH,
        "annotations": [dict(a) for a in annotations],
        "negative_boxes": negative_boxes,
    }


# ------------------------------------------------------------------------------ mapper


def test_mapper_transforms_negative_boxes_as_it_transforms_annotations(write_image):
    out = make_mapper(RESIZE_AND_FLIP)(make_dict(write_image(), [OBJECT["bbox"]]))
    # Flipped at half scale, where the object with the same box went.
    assert torch.equal(out["negative_boxes"].tensor, out["instances"].gt_boxes.tensor)
    np.testing.assert_allclose(out["negative_boxes"].tensor[0], [32 - 15, 3, 32 - 2, 20])


def test_mapper_leaves_out_negative_boxes_the_crop_removed(write_image):
    inside, outside = [4.0, 6.0, 30.0, 40.0], [40.0, 25.0, 60.0, 45.0]
    out = make_mapper(CROP)(make_dict(write_image(), [inside, outside]))
    assert out["negative_boxes"].tensor.tolist() == [[4.0, 6.0, 30.0, 20.0]]


def test_a_negative_image_with_negative_boxes_has_empty_instances(write_image):
    out = make_mapper(RESIZE_AND_FLIP)(make_dict(write_image(), [[2, 2, 10, 10]], []))
    assert len(out["instances"]) == 0 and len(out["negative_boxes"]) == 1


def test_a_dict_without_negative_boxes_is_mapped_as_before(write_image):
    record = make_dict(write_image(), None)
    del record["negative_boxes"]
    assert "negative_boxes" not in make_mapper(RESIZE_AND_FLIP)(record)


BAD_BOXES = {
    "zero area": ([10, 10, 10, 30], "zero or negative area"),
    "outside": ([70, 10, 90, 20], "outside"),
    "nan": ([1, 1, float("nan"), 5], "NaN or inf"),
    "not four numbers": ([1, 2, 3], "not 4 numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_BOXES))
def test_invalid_negative_box_raises_naming_file_image_and_field(write_image, case):
    path = write_image()
    box, reason = BAD_BOXES[case]
    with pytest.raises(InvalidAnnotationError) as info:
        make_mapper(RESIZE_AND_FLIP)(make_dict(path, [[1, 1, 9, 9], box]))
    for expected in (str(path), "image id 7", "negative_boxes entry #1", reason, "drop"):
        assert expected in str(info.value)


def test_invalid_negative_box_is_dropped_and_counted_under_drop(write_image, caplog):
    mapper = make_mapper(RESIZE_AND_FLIP, "drop")
    with caplog.at_level(logging.WARNING, logger="hnm_d2.data.mapper"), EventStorage():
        out = mapper(make_dict(write_image(), [[70, 10, 90, 20], [2, 2, 10, 10]]))
    assert len(out["negative_boxes"]) == 1 and mapper.num_dropped_annotations == 1
    # Only the mapper's own warnings: an earlier test's logging setup may let detectron2's
    # INFO lines (the augmentations) reach caplog too.
    warnings = [r.getMessage() for r in caplog.records if r.name == "hnm_d2.data.mapper"]
    assert len(warnings) == 1 and "negative_boxes entry #0" in warnings[0]


def test_negative_boxes_that_are_no_list_name_the_contract(write_image):
    with pytest.raises(InvalidAnnotationError, match="'negative_boxes' is a ndarray.*XYXY_ABS"):
        make_mapper(RESIZE_AND_FLIP)(make_dict(write_image(), np.zeros((1, 4))))


# ------------------------------------------------------------------------------ loaders

# "fake" marks look-alikes: image 1 holds an object of each class and a look-alike, image 2 a
# look-alike only (a negative image), image 3 nothing.
COCO_CATEGORIES = [{"id": 1, "name": "a"}, {"id": 2, "name": "fake"}, {"id": 3, "name": "b"}]
COCO_IMAGES = [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 30} for i in (1, 2, 3)]
COCO_ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "iscrowd": 0},
    {"id": 2, "image_id": 1, "category_id": 2, "bbox": [10, 2, 6, 4], "iscrowd": 0},
    {"id": 3, "image_id": 1, "category_id": 1, "bbox": [2, 8, 4, 4], "iscrowd": 0},
    {"id": 4, "image_id": 2, "category_id": 2, "bbox": [0, 0, 8, 8], "iscrowd": 0},
]


def coco_files(tmp_path):
    """The JSON with the "fake" category, and the same file without it."""
    write_images(tmp_path, COCO_IMAGES)
    with_fake = write_coco(tmp_path / "fake.json", COCO_IMAGES, COCO_ANNOTATIONS, COCO_CATEGORIES)
    without = write_coco(
        tmp_path / "plain.json",
        COCO_IMAGES,
        [a for a in COCO_ANNOTATIONS if a["category_id"] != 2],
        [c for c in COCO_CATEGORIES if c["name"] != "fake"],
    )
    return with_fake, without


def test_coco_category_becomes_negative_boxes_and_no_class(tmp_path, dataset_name, caplog):
    with_fake, without = coco_files(tmp_path)
    name = register_coco_with_negatives(
        dataset_name(), with_fake, tmp_path, negative_box_category="fake"
    )
    plain = register_coco_with_negatives(dataset_name(), without, tmp_path)
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        dicts = DatasetCatalog.get(name)
    # The classes, their contiguous ids and the annotations are those of the file without it.
    assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
    plain_dicts = DatasetCatalog.get(plain)
    assert [d["annotations"] for d in dicts] == [d["annotations"] for d in plain_dicts]
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {1: 0, 3: 1}
    assert MetadataCatalog.get(plain).thing_dataset_id_to_contiguous_id == {1: 0, 3: 1}
    assert [d["negative_boxes"] for d in dicts] == [[[10, 2, 16, 6]], [[0, 0, 8, 8]], []]
    assert [is_negative_image(d) for d in dicts] == [False, True, True]
    # COCOEvaluator would evaluate "fake" as a class of the JSON.
    assert not hasattr(MetadataCatalog.get(name), "json_file")
    assert "2 negative boxes on 2 images" in caplog.text


def test_coco_unknown_negative_category_names_the_file_and_its_categories(tmp_path):
    with_fake, _ = coco_files(tmp_path)
    with pytest.raises(ValueError) as info:
        register_coco_with_negatives("never_registered", with_fake, tmp_path, "error", "Fake")
    assert "never_registered" not in DatasetCatalog.list()
    for expected in (str(with_fake), "'Fake'", "['a', 'b', 'fake']", "--negative-box-category"):
        assert expected in str(info.value)


def write_voc(root, objects_of_image):
    """A VOC split "train" of 30 x 20 images: file id -> [(class name, xmin, ymin, xmax, ymax)]."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("\n".join(objects_of_image))
    for file_id, objects in objects_of_image.items():
        Image.new("RGB", (30, 20)).save(root / "JPEGImages" / f"{file_id}.jpg")
        xml_objects = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for n, x0, y0, x1, y1 in objects
        )
        (root / "Annotations" / f"{file_id}.xml").write_text(
            f"<annotation><size><width>30</width><height>20</height></size>{xml_objects}"
            "</annotation>"
        )
    return root


VOC_OBJECTS = {
    "img_1": [("a", 2, 2, 6, 6), ("fake", 11, 3, 16, 6), ("b", 3, 9, 6, 12)],
    "img_2": [("fake", 1, 1, 8, 8)],
    "img_3": [("b", 20, 10, 25, 15)],
}


def test_voc_class_becomes_negative_boxes_beside_the_chosen_ones(tmp_path):
    root = write_voc(tmp_path / "voc", VOC_OBJECTS)
    dicts = load_voc_with_negatives(root, "train", ["a"], negative_box_category="fake")
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[0], [], []]
    assert [d["negative_boxes"] for d in dicts] == [[[10.0, 2.0, 16.0, 6.0]], [[0, 0, 8, 8]], []]
    assert [is_negative_image(d) for d in dicts] == [False, True, True]
    assert "negative_boxes" not in load_voc_with_negatives(root, "train", ["a"])[0]


@pytest.mark.parametrize(
    "classes, category, message",
    [
        (["a"], "Fake", r"'Fake' is not one of its categories \['a', 'b', 'fake'\]"),
        (["a", "fake"], "fake", "both a chosen class"),
    ],
)
def test_voc_negative_category_absent_or_chosen_is_an_error(tmp_path, classes, category, message):
    root = write_voc(tmp_path / "voc", VOC_OBJECTS)
    with pytest.raises(ValueError, match=f"VOC {root} split train: .*{message}"):
        load_voc_with_negatives(root, "train", classes, negative_box_category=category)


def yolo_tree(tmp_path):
    """Images 1 (a, b and a look-alike), 2 (a look-alike only) and 3 (no label file) of
    100 x 50 px; the classes a, fake, b."""
    return make_yolo_tree(
        tmp_path / "yolo",
        images={"1.png": (100, 50), "2.png": (100, 50), "3.png": (100, 50)},
        labels={
            "1.txt": "0 0.5 0.5 0.2 0.4\n1 0.1 0.2 0.1 0.2\n2 0.8 0.5 0.1 0.2\n",
            "2.txt": "1 0.5 0.5 0.2 0.2\n",
        },
        names=("a", "fake", "b"),
    )


def test_yolo_class_becomes_negative_boxes_and_is_not_left_out(tmp_path, caplog):
    root = yolo_tree(tmp_path)
    with caplog.at_level(logging.INFO, logger="hnm_d2"):
        dicts = load_yolo_with_negatives(root, "train", negative_box_category="fake")
    # Every other class, with the ids of the file without "fake".
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[0, 1], [], []]
    np.testing.assert_allclose(dicts[0]["negative_boxes"], [[5, 5, 15, 15]])
    np.testing.assert_allclose(dicts[1]["negative_boxes"], [[40, 20, 60, 30]])
    assert dicts[2]["negative_boxes"] == []
    assert [is_negative_image(d) for d in dicts] == [False, True, True]
    assert "left out" not in caplog.text and "'negative boxes only': 1" in caplog.text


def test_yolo_invalid_negative_box_is_named_by_its_label_file_line(tmp_path, caplog):
    root = yolo_tree(tmp_path)
    (root / "labels" / "train" / "2.txt").write_text("1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0 0.2\n")
    with caplog.at_level(logging.WARNING, logger="hnm_d2"):
        dicts = load_yolo_with_negatives(root, "train", negative_box_category="fake")
    # Kept for the mapper's policy, as an invalid annotation is; the warning says where it is.
    assert len(dicts[1]["negative_boxes"]) == 2
    assert "1 invalid negative boxes" in caplog.text
    assert f"{root / 'labels' / 'train' / '2.txt'} line 2 '1 0.5 0.5 0 0.2'" in caplog.text


def test_yolo_negative_category_beside_chosen_classes_and_unknown(tmp_path):
    root = yolo_tree(tmp_path)
    dicts = load_yolo_with_negatives(root, "train", ["b"], negative_box_category="fake")
    assert [len(d["annotations"]) for d in dicts] == [1, 0, 0]
    assert [len(d["negative_boxes"]) for d in dicts] == [1, 1, 0]
    with pytest.raises(
        ValueError, match=r"data.yaml\): negative_box_category 'fak' is not one of its categories"
    ):
        load_yolo_with_negatives(root, "train", negative_box_category="fak")


def test_one_flag_gives_every_registered_format_its_negative_boxes(tmp_path, dataset_name):
    coco_json, _ = coco_files(tmp_path)
    voc_root, yolo_root = write_voc(tmp_path / "voc", VOC_OBJECTS), yolo_tree(tmp_path)
    coco, voc, yolo = dataset_name(), dataset_name(), dataset_name()
    args = add_registration_arguments(argparse.ArgumentParser()).parse_args(
        [
            "--register-coco", coco, str(coco_json), str(tmp_path),
            "--register-voc", voc, str(voc_root), "train", "a,b",
            "--register-yolo", yolo, str(yolo_root), "train",
            "--negative-box-category", "fake",
        ]
    )  # fmt: skip
    assert register_from_args(args) == [coco, voc, yolo]
    for name in (coco, voc, yolo):
        assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
        assert [len(d["negative_boxes"]) for d in DatasetCatalog.get(name)] == [1, 1, 0]


# ------------------------------------------------------------------------------ heads

# Far from every grid proposal (the top-left 46 x 46 px) and from the object; half-pixel
# corners, which no proposal has.
LOOK_ALIKE = [60.5, 30.5, 90.5, 60.5]
OBJECT_BOX = [10, 8, 40, 40]


def with_negative_boxes(inputs, *boxes_per_image):
    for x, boxes in zip(inputs, boxes_per_image):
        if boxes is not None:
            x["negative_boxes"] = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    return inputs


def sample(heads, inputs, seed=0):
    """The heads' training proposals of the two images of ``inputs`` (200 grid proposals each;
    the first image holds OBJECT_BOX), and the storage they logged to."""
    torch.manual_seed(seed)
    proposals = [rpn_like_proposals(grid_proposals(200)) for _ in inputs]
    with EventStorage() as storage, heads.visiting(inputs):
        sampled = heads.label_and_sample_proposals(
            proposals, [instances([OBJECT_BOX]), instances([])]
        )
    return sampled, storage


def rows_at(sampled, box):
    return (sampled.proposal_boxes.tensor == torch.tensor(box)).all(dim=1)


@pytest.mark.parametrize("step", range(3))
def test_a_negative_box_is_sampled_as_background_at_every_step(step):
    heads = seeded_model(tiny_cfg()).roi_heads
    inputs = with_negative_boxes(batch(), [LOOK_ALIKE], None)
    (first, second), storage = sample(heads, inputs, seed=step)
    assert int(rows_at(first, LOOK_ALIKE).sum()) == 1
    assert first.gt_classes[rows_at(first, LOOK_ALIKE)].tolist() == [heads.num_classes]
    assert len(first) == heads.batch_size_per_image
    assert not rows_at(second, LOOK_ALIKE).any()
    assert storage.history("hnm/negative_boxes_injected").latest() == 0.5  # 1 and 0 per image
    assert "hnm/buffer_injected" not in storage.histories()


def test_a_negative_box_on_an_object_is_not_trained_as_background():
    heads = seeded_model(tiny_cfg()).roi_heads
    on_the_object = [10.5, 8.5, 40.5, 40.5]  # IoU 0.94: the matcher calls it the object
    (first, _), storage = sample(heads, with_negative_boxes(batch(), [on_the_object], []))
    assert not rows_at(first, on_the_object).any()
    assert storage.history("hnm/negative_boxes_injected").latest() == 0


def half_pixel_boxes(n, y0):
    """n disjoint 1 x 10 px boxes in a row from height y0, their x at y0's fraction of a pixel
    (the heads never clip them, so a row past the image's edge is fine)."""
    x0 = torch.arange(float(n))[:, None] * 3 + y0 % 1
    return torch.cat([x0, torch.full_like(x0, y0), x0 + 1, torch.full_like(x0, y0 + 10)], 1)


@pytest.mark.parametrize("num_negative", [10, 50, 100])
def test_negative_boxes_come_first_then_the_buffer_gets_its_share_of_what_is_left(num_negative):
    heads = seeded_model(
        tiny_cfg(
            **{
                "MODEL.HNM.BUFFER.ENABLED": True,
                "MODEL.HNM.BUFFER.BG_SHARE": 0.5,
                "MODEL.HNM.BUFFER.PER_IMAGE": 32,
            }
        )
    ).roi_heads
    negative, buffered = half_pixel_boxes(num_negative, 48.5), half_pixel_boxes(20, 49.25)
    scores = torch.linspace(1.0, 0.6, 20)
    heads.hard_negative_buffer.record_visit(image_key("positive.jpg"), buffered, scores, 0)
    inputs = with_negative_boxes(batch(), negative.tolist(), [])
    (first, _), storage = sample(heads, inputs)
    quota = heads.batch_size_per_image - int((first.gt_classes == 0).sum())
    is_negative = (first.proposal_boxes.tensor[:, 0] % 1) == 0.5
    is_buffered = (first.proposal_boxes.tensor[:, 0] % 1) == 0.25
    expected_negative = min(num_negative, quota)
    expected_buffered = min(20, int(0.5 * quota), quota - expected_negative)
    assert torch.equal(first.proposal_boxes.tensor[is_negative], negative[:expected_negative])
    assert torch.equal(first.proposal_boxes.tensor[is_buffered], buffered[:expected_buffered])
    assert (first.gt_classes[is_negative | is_buffered] == heads.num_classes).all()
    assert len(first) == heads.batch_size_per_image
    assert storage.history("hnm/negative_boxes_injected").latest() == expected_negative / 2
    assert storage.history("hnm/buffer_injected").latest() == expected_buffered / 2


def test_the_buffer_does_not_store_a_negative_box_it_injects_every_visit_anyway():
    # Every background RoI of the visit is hard enough to store (threshold 0, room for all).
    options = {
        "MODEL.HNM.BUFFER.ENABLED": True,
        "MODEL.HNM.BUFFER.SCORE_THRESH": 0.0,
        "MODEL.HNM.BUFFER.WARMUP_ITERS": 0,
        "MODEL.HNM.BUFFER.PER_IMAGE": 512,
    }
    model = seeded_model(tiny_cfg(**options))
    seeded_losses(model, with_negative_boxes(batch(), None, [LOOK_ALIKE]))
    buffer = model.roi_heads.hard_negative_buffer
    stored, _ = buffer.boxes_of(image_key("negative.jpg"))
    assert len(stored) > 0  # the image's other background RoIs are stored
    overlap = pairwise_iou(Boxes(stored), Boxes(torch.tensor([LOOK_ALIKE])))[:, 0]
    assert (overlap <= buffer.dedup_iou).all()


def test_under_ohem_negative_boxes_join_the_candidates():
    heads = seeded_model(tiny_cfg(**{"MODEL.HNM.ROI_OHEM.ENABLED": True})).roi_heads
    (first, second), storage = sample(heads, with_negative_boxes(batch(), [LOOK_ALIKE], []))
    # Every proposal, the appended gt box and the negative box are candidates.
    assert (len(first), len(second)) == (200 + 1 + 1, 200)
    assert first.gt_classes[rows_at(first, LOOK_ALIKE)].tolist() == [heads.num_classes]
    assert storage.history("hnm/negative_boxes_injected").latest() == 0.5


def test_cascade_heads_inject_negative_boxes_at_stage_0_and_train():
    model = seeded_model(cascade_cfg())
    (first, _), _ = sample(model.roi_heads, with_negative_boxes(batch(), [LOOK_ALIKE], None))
    assert first.gt_classes[rows_at(first, LOOK_ALIKE)].tolist() == [model.roi_heads.num_classes]
    losses = seeded_losses(model, with_negative_boxes(batch(), [LOOK_ALIKE], None))
    assert all(torch.isfinite(v) for v in losses.values())


def test_inputs_without_negative_boxes_give_the_stock_losses_to_the_bit():
    stock = seeded_losses(seeded_model(tiny_cfg(hnm=False)))
    empty = with_negative_boxes(batch(), [], [])
    assert_same_losses(seeded_losses(seeded_model(tiny_cfg()), empty), stock)
    # A stock model ignores them, as it ignores keypoints with MODEL.KEYPOINT_ON off.
    carrying = with_negative_boxes(batch(), [LOOK_ALIKE], [LOOK_ALIKE])
    assert_same_losses(seeded_losses(seeded_model(tiny_cfg(hnm=False)), carrying), stock)


def test_negative_boxes_the_mapper_did_not_transform_are_refused():
    inputs = batch()
    inputs[0]["negative_boxes"] = [LOOK_ALIKE]
    with pytest.raises(ValueError, match="positive.jpg.*NegativeAwareDatasetMapper"):
        seeded_losses(seeded_model(tiny_cfg()), inputs)


def test_training_on_a_dataset_with_negative_boxes_injects_them(tmp_path, dataset_name):
    # Three 96 x 64 images of noise: an object and a look-alike, then a look-alike each.
    images = [{"id": i, "file_name": f"{i}.png", "height": 64, "width": 96} for i in (1, 2, 3)]
    for i, image in enumerate(images):
        pixels = np.random.default_rng(i).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / image["file_name"])
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 8, 30, 32], "iscrowd": 0},
        *[
            {"id": 1 + i, "image_id": i, "category_id": 2, "bbox": [60, 30, 30, 30], "iscrowd": 0}
            for i in (1, 2, 3)
        ],
    ]
    categories = [{"id": 1, "name": "target"}, {"id": 2, "name": "look-alike"}]
    json_file = write_coco(tmp_path / "train.json", images, annotations, categories)
    name = register_coco_with_negatives(
        dataset_name(), json_file, tmp_path, negative_box_category="look-alike"
    )
    cfg = tiny_cfg(
        **{
            "DATASETS.TRAIN": (name,),
            "DATALOADER.NUM_WORKERS": 0,
            "DATALOADER.FILTER_EMPTY_ANNOTATIONS": False,
            "SOLVER.IMS_PER_BATCH": 2,
        }
    )
    model = seeded_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    data = iter(build_hnm_train_loader(cfg))
    with EventStorage() as storage:
        for _ in range(3):
            losses = model(next(data))
            assert all(torch.isfinite(v) for v in losses.values()), losses
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            storage.step()
        injected = [v for v, _ in storage.history("hnm/negative_boxes_injected").values()]
    assert injected == [1.0, 1.0, 1.0]  # every image holds one look-alike
