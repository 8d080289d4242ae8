import glob
import os

import pytest
from detectron2.config import get_cfg

from sine import add_sine_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def test_defaults_are_the_released_model():
    cfg = get_cfg()
    add_sine_config(cfg)
    assert cfg.MODEL.META_ARCHITECTURE == "SINE"
    assert cfg.MODEL.DINOV2.ARCH == "vit_large" and cfg.MODEL.DINOV2.PATCH_SIZE == 14
    assert cfg.MODEL.SINE.NUM_QUERIES == 200
    assert cfg.INPUT.IMAGE_SIZE == 896 and cfg.MODEL.SINE.PAD_SIZE == 896
    assert (cfg.MODEL.SINE.CLASS_WEIGHT, cfg.MODEL.SINE.MASK_WEIGHT) == (2.0, 5.0)


def test_there_are_configs():
    names = {os.path.relpath(p, ROOT) for p in CONFIGS}
    assert "configs/Base-SINE.yaml" in names
    assert any(n.startswith("configs/pretrain/") for n in names)
    assert any(n.startswith("configs/demo/") for n in names)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_yaml_merges_and_freezes(path):
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.merge_from_file(path)  # raises on any unknown key
    cfg.freeze()
    assert cfg.MODEL.META_ARCHITECTURE == "SINE"
    if cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS:
        assert len(cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS) == len(cfg.DATASETS.TRAIN)
