"""The README's "Use it in your project" snippets run as written.

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
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

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
