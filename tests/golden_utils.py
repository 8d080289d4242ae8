"""Helpers to check sine against a golden directory produced by the official SINE code.

A golden directory holds ``config.json``, ``inputs.pt``, ``outputs_eval.pt``,
``outputs_train.pt``, ``trace_pairA.pt`` and an official-format state dict (see its README.md).
Everything model-related is derived from ``config.json`` alone, so any golden directory in the
same format can be checked by the same tests.
"""
import glob
import json
import os
from typing import Dict, List

import torch
from detectron2.config import get_cfg
from detectron2.structures import Instances

from sine.config import add_sine_config

GOLDEN_FILES = {
    "inputs": "inputs.pt",
    "outputs_eval": "outputs_eval.pt",
    "outputs_train": "outputs_train.pt",
    "trace": "trace_pairA.pt",
}


def state_dict_path(golden_dir: str) -> str:
    paths = sorted(glob.glob(os.path.join(golden_dir, "*state_dict*.pth")))
    if len(paths) != 1:
        raise FileNotFoundError(f"expected one *state_dict*.pth in {golden_dir}, found {paths}")
    return paths[0]


def load_golden(golden_dir: str) -> Dict:
    """All golden files: config (dict), inputs, outputs_eval, outputs_train, trace, state_dict.

    Files that are absent map to None.
    """
    with open(os.path.join(golden_dir, "config.json")) as f:
        golden = {"config": json.load(f)}
    for key, name in GOLDEN_FILES.items():
        path = os.path.join(golden_dir, name)
        golden[key] = torch.load(path, map_location="cpu") if os.path.isfile(path) else None
    golden["state_dict"] = torch.load(state_dict_path(golden_dir), map_location="cpu")
    return golden


def _read_config(golden_dir: str) -> Dict:
    with open(os.path.join(golden_dir, "config.json")) as f:
        return json.load(f)


def build_golden_cfg(golden_dir: str, opts=()):
    """A frozen detectron2 config equivalent to the golden model (from config.json only).

    ``opts``: ``KEY VALUE`` overrides that must not change the outputs (e.g. MODEL.DINOV2.VIT).
    """
    conf = _read_config(golden_dir)
    args, attrs = conf["args"], conf["model_attributes"]
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    vit = conf.get("tiny_vit")
    d = cfg.MODEL.DINOV2
    if vit:
        d.EMBED_DIM, d.DEPTH, d.NUM_HEADS = vit["embed_dim"], vit["depth"], vit["num_heads"]
        d.MLP_RATIO = float(vit["mlp_ratio"])
        d.PATCH_SIZE, d.IMG_SIZE = vit["patch_size"], vit["img_size"]
        d.INIT_VALUES, d.FFN_LAYER = vit["init_values"], vit["ffn_layer"]
    else:
        d.ARCH = args["dinov2_size"]
    d.WEIGHTS = ""
    s = cfg.MODEL.SINE
    s.FEAT_CHANS = args["feat_chans"]
    s.NECK_USE_FC = args["image_enc_use_fc"]
    s.DEC_LAYERS = args["transformer_depth"]
    s.NHEADS = args["transformer_nheads"]
    s.DIM_FEEDFORWARD = args["transformer_mlp_dim"]
    s.MASK_DIM = args["transformer_mask_dim"]
    s.FUSION_LAYERS = args["transformer_fusion_layer_depth"]
    s.NUM_QUERIES = args["transformer_num_queries"]
    s.PRE_NORM = args["transformer_pre_norm"]
    s.DEEP_SUPERVISION = args["deep_supervision"]
    s.CLASS_WEIGHT = args["class_weight"]
    s.MASK_WEIGHT = args["mask_weight"]
    s.DICE_WEIGHT = args["dice_weight"]
    s.NO_OBJECT_WEIGHT = args["no_object_weight"]
    s.TRAIN_NUM_POINTS = args["train_num_points"]
    s.OVERSAMPLE_RATIO = args["oversample_ratio"]
    s.IMPORTANCE_SAMPLE_RATIO = args["importance_sample_ratio"]
    s.PAD_SIZE = args["image_size"]  # official: LSJ target size = square pad size
    thresholds = attrs["score_threshold_per_mode"]
    s.TEST.TOPK_PER_IMAGE = attrs["test_topk_per_image"]
    s.TEST.INSTANCE_SCORE_THRESH = float(thresholds["instance"])
    s.TEST.ID_SCORE_THRESH = float(thresholds["identity"])
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def build_golden_model(golden_dir: str, opts=()):
    """SINE built from config.json with the golden (official-format) state dict, in eval mode."""
    from detectron2.modeling import build_model

    model = build_model(build_golden_cfg(golden_dir, opts))
    state_dict = torch.load(state_dict_path(golden_dir), map_location="cpu")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _instances(inputs: Dict, prefix: str) -> Instances:
    h, w = inputs[prefix + "image_uint8_hwc"].shape[:2]
    inst = Instances((h, w))
    inst.gt_masks = inputs[prefix + "gt_masks"][:, :h, :w].clone()
    inst.gt_classes = inputs[prefix + "gt_classes"].clone()
    inst.ins_ids = inputs[prefix + "ins_ids"].clone()
    return inst


def golden_pairs(inputs: Dict) -> List[str]:
    """Pair names ("A", "B", ...) present in ``inputs.pt``, in order."""
    return sorted({k.split("_")[0] for k in inputs if k.endswith("_tar_image")})


def golden_batched_inputs(golden_dir: str) -> List[Dict]:
    """The golden pairs in sine's input format: one target dict per pair, one reference each.

    Fresh tensors on every call (uint8 content images, masks cropped to the content).
    """
    inputs = torch.load(os.path.join(golden_dir, "inputs.pt"), map_location="cpu")
    batched = []
    for pair in golden_pairs(inputs):
        ref, tar = f"{pair}_ref_", f"{pair}_tar_"
        height, width = inputs[tar + "height_width"].tolist()
        batched.append({
            "image": inputs[tar + "image_uint8_hwc"].permute(2, 0, 1).contiguous(),
            "height": height,
            "width": width,
            "instances": _instances(inputs, tar),
            "references": [{
                "image": inputs[ref + "image_uint8_hwc"].permute(2, 0, 1).contiguous(),
                "instances": _instances(inputs, ref),
            }],
        })
    return batched
