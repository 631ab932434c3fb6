"""The README's "Use it in your project" snippets run as written, and its Mask R-CNN and
Cascade R-CNN YAML snippets train on the model-zoo configs they name.

Each Python snippet of that section runs verbatim in a folder where ``data/`` holds the
synthetic splits as COCO files, ``configs/`` is the repository's, and ``my_hnm.yaml`` is the
README's YAML snippet. Only the schedule is shrunk: every ``merge_from_file`` is followed by a
few overrides (2 iterations on tiny images, CPU, no download of ImageNet weights), so the test
takes seconds while every line of the snippet runs.
"""

import os
import re
from pathlib import Path

import pytest
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

import hnm_d2
from hnm_d2.engine import HNMTrainer

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Use it in your project"
SHRINK = {
    "MODEL.DEVICE": "cpu",
    "MODEL.WEIGHTS": "",
    "INPUT.MIN_SIZE_TRAIN": (96,),
    "INPUT.MAX_SIZE_TRAIN": 160,
    "INPUT.MIN_SIZE_TEST": 96,
    "INPUT.MAX_SIZE_TEST": 160,
    "SOLVER.IMS_PER_BATCH": 2,
    "SOLVER.MAX_ITER": 2,
    "SOLVER.STEPS": (),
    "SOLVER.WARMUP_ITERS": 1,
    "SOLVER.CHECKPOINT_PERIOD": 1000,
    "DATALOADER.NUM_WORKERS": 0,
}


def readme_section_blocks(language):
    readme = (REPO / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


PYTHON_SNIPPETS = readme_section_blocks("python")


def test_the_section_has_the_three_ways_in():
    assert len(PYTHON_SNIPPETS) == 3 and len(readme_section_blocks("yaml")) == 1


@pytest.fixture
def project_folder(tmp_path, synthetic_root, monkeypatch):
    (tmp_path / "data").symlink_to(synthetic_root, target_is_directory=True)
    (tmp_path / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    (tmp_path / "my_hnm.yaml").write_text(readme_section_blocks("yaml")[0])
    monkeypatch.chdir(tmp_path)
    merge_from_file = CfgNode.merge_from_file

    def merge_then_shrink(cfg, filename, *args, **kwargs):
        merge_from_file(cfg, filename, *args, **kwargs)
        for key, value in SHRINK.items():
            cfg.merge_from_list([key, value])

    monkeypatch.setattr(CfgNode, "merge_from_file", merge_then_shrink)
    yield tmp_path
    for name in ("my_train", "my_test", "my_test_positives"):
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


@pytest.mark.parametrize("snippet", PYTHON_SNIPPETS, ids=["hnm_trainer", "own_trainer", "zoo"])
def test_readme_snippet_runs(snippet, project_folder, synthetic_datasets):
    namespace = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    cfg = namespace["cfg"]
    assert cfg.MODEL.META_ARCHITECTURE == "HNMRCNN"
    assert cfg.MODEL.HNM.ROI_OHEM.ENABLED and cfg.MODEL.HNM.BUFFER.ENABLED
    if "results" in namespace:  # the snippets that evaluate: COCO AP beside the false alarms
        assert {"bbox", "bbox_positives", "negatives"} <= set(namespace["results"])
        assert namespace["results"]["negatives"]["num_images"] == 16
    else:
        assert os.path.exists(project_folder / cfg.OUTPUT_DIR / "model_final.pth")


HEAD_SECTION = "## Mask R-CNN and Cascade R-CNN"


def readme_head_snippets():
    """(model-zoo config, the README's YAML for it) of each subsection of HEAD_SECTION."""
    readme = (REPO / "README.md").read_text()
    section = readme.split(HEAD_SECTION, 1)[1].split("\n## ", 1)[0]
    subsections = section.split("\n### ")[1:]
    zoo_configs = [re.search(r"On top of `(.+?\.yaml)`", sub).group(1) for sub in subsections]
    snippets = [re.search(r"```yaml\n(.*?)```", sub, flags=re.S).group(1) for sub in subsections]
    return list(zip(zoo_configs, snippets))


@pytest.mark.parametrize("zoo_config, snippet", readme_head_snippets(), ids=["mask", "cascade"])
def test_readme_head_snippet_trains_on_the_zoo_config(
    zoo_config, snippet, tmp_path, synthetic_datasets
):
    (tmp_path / "snippet.yaml").write_text(snippet)
    cfg = get_cfg()
    hnm_d2.add_hnm_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file(zoo_config))
    cfg.merge_from_file(str(tmp_path / "snippet.yaml"))
    for key, value in {**SHRINK, "MODEL.ROI_HEADS.NUM_CLASSES": 1}.items():
        cfg.merge_from_list([key, value])
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (synthetic_datasets["train"],), ()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    trainer = HNMTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    heads = trainer.model.roi_heads
    assert type(heads).__name__ == cfg.MODEL.ROI_HEADS.NAME and cfg.MODEL.MASK_ON
    assert heads.ohem_enabled and heads.hard_negative_buffer is not None
    assert all(p.bg_weight == 0.5 for p in heads._box_predictors())
    assert (tmp_path / "out" / "model_final.pth").exists()
