import glob
import os

import pytest
from detectron2.config import get_cfg

from sine import add_sine_config
from sine.config import add_segic_config, get_sine_cfg

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


def test_segic_defaults_are_the_released_recipe():
    cfg = get_sine_cfg(os.path.join(ROOT, "configs", "segic", "Base-SegIC.yaml"))
    s = cfg.MODEL.SEGIC
    assert cfg.MODEL.META_ARCHITECTURE == "SegIC"
    assert cfg.MODEL.DINOV2.ARCH == "vit_large" and cfg.MODEL.DINOV2.OUTPUT_NORM
    assert s.IMAGE_SIZE == 896 and s.WIDTH == 256
    assert (s.DEC_LAYERS, s.NHEADS, s.MLP_DIM) == (2, 8, 2048)
    assert s.USE_TEXT and tuple(s.MASK_DOWN_STRIDES) == (7, 2)
    # The SINE keys are untouched by the SegIC ones (one loader for both models).
    assert not get_sine_cfg().MODEL.DINOV2.OUTPUT_NORM


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_yaml_merges_and_freezes(path):
    cfg = get_sine_cfg(path)  # raises on any unknown key
    cfg.freeze()
    assert cfg.MODEL.META_ARCHITECTURE in ("SINE", "SegIC", "SINETransfer")
    if cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS:
        assert len(cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS) == len(cfg.DATASETS.TRAIN)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_yaml_sizes_fit_its_vit_patch(path):
    """Images are padded to these sizes and cut into patches: with DINOv3 (patch 16) the 14-based
    sizes (896, 1036) do not fit, so each config must scale them with its own patch size."""
    from sine.modeling.backbone.vit_builder import VIT_BUILDERS

    cfg = get_cfg()
    add_sine_config(cfg)
    add_segic_config(cfg)  # SegIC yamls set MODEL.SEGIC keys
    cfg.merge_from_file(path)
    assert cfg.MODEL.DINOV2.VIT in VIT_BUILDERS
    patch = cfg.MODEL.DINOV2.PATCH_SIZE
    for key in ("MODEL.SINE.PAD_SIZE", "MODEL.SINE.VOS.PAD_SIZE", "MODEL.SEGIC.IMAGE_SIZE"):
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        assert value % patch == 0, f"{key}={value} is not a multiple of the patch size {patch}"


# The configs of the paper numbers of Tables 5a, 6, 7, 8 and 10 (issue 14).
PAPER_CONFIGS = {
    "configs/transfer/ade20k_semantic_lora_vitl.yaml": ["54.1"],
    "configs/transfer/coco_panoptic_lora_vitl.yaml": ["51.0", "57.8", "40.8"],
    "configs/pretrain/sine_dinov2_vitl14_coco_ade.yaml": ["67.1", "86.3", "28.8"],
    "configs/parts/pascal_part_1shot.yaml": ["36.2", "22.7", "61.8", "21.7", "38.5"],
}


@pytest.mark.parametrize("rel", sorted(PAPER_CONFIGS))
def test_paper_configs_state_the_expected_numbers_and_their_command(rel):
    with open(os.path.join(ROOT, rel)) as f:
        text = f.read()
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Expected" in comments and all(v in comments for v in PAPER_CONFIGS[rel])
    assert "python " in comments  # the command that reproduces it
