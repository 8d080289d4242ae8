"""Helpers to check SegIC against a golden directory produced by the official SegIC code.

A golden directory (see its README.md) holds ``config.json``, ``manifest.json``, ``inputs.pt``,
``outputs_{eval,vos,train}.pt``, the official-format ``*state_dict*.pth`` and
``frozen_backbone.pth`` (DINOv2 + CLIP text tower). The model is built from ``config.json`` and
the shapes of the weight files alone, so any directory in this format can be checked.
"""
import glob
import json
import math
import os
from typing import Dict, List, Optional

import torch

from sine.config import get_sine_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CONFIG = os.path.join(ROOT, "configs", "segic", "Base-SegIC.yaml")


def load_segic_golden(golden_dir: str) -> Dict:
    """config, inputs, eval / vos / train outputs, and the weight file paths."""
    with open(os.path.join(golden_dir, "config.json")) as f:
        golden = {"dir": golden_dir, "config": json.load(f)}
    for key in ("inputs", "outputs_eval", "outputs_vos", "outputs_train"):
        golden[key] = torch.load(os.path.join(golden_dir, f"{key}.pt"), map_location="cpu")
    paths = sorted(glob.glob(os.path.join(golden_dir, "*state_dict*.pth")))
    if len(paths) != 1:
        raise FileNotFoundError(f"expected one *state_dict*.pth in {golden_dir}, found {paths}")
    golden["state_dict_path"] = paths[0]
    golden["frozen"] = torch.load(os.path.join(golden_dir, "frozen_backbone.pth"),
                                  map_location="cpu")
    return golden


def write_frozen_weights(golden: Dict, out_dir: str):
    """The golden frozen towers in their release formats: an official-layout DINOv2 ``.pth``
    and a Hugging Face CLIP text directory. Returns (dinov2 path, clip directory)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    dinov2 = os.path.join(out_dir, "dinov2.pth")
    torch.save(golden["frozen"]["dinov2"], dinov2)
    text = dict(golden["frozen"]["text_model"])
    rows = text.pop("token_embedding_rows.ids")
    values = text.pop("token_embedding_rows.values")
    shape = [int(x) for x in text.pop("token_embedding_rows.full_shape")]
    table = torch.zeros(shape, dtype=values.dtype)
    table[rows] = values  # rows never indexed do not influence anything (README)
    text["text_model.embeddings.token_embedding.weight"] = table
    model = CLIPTextModel(CLIPTextConfig(**golden["config"]["tiny"]["text_config"]))
    own = model.state_dict()
    # transformers >= 5 names the keys without the "text_model." prefix of the stored dict.
    text = {k if k in own else k[len("text_model."):]: v for k, v in text.items()}
    model.load_state_dict(text, strict=True)
    clip_dir = os.path.join(out_dir, "clip_text")
    model.save_pretrained(clip_dir)
    return dinov2, clip_dir


def build_segic_cfg(golden: Dict, dinov2: str = "", clip_dir: str = "", use_text: bool = True):
    """The SegIC config of the golden model: Base-SegIC.yaml + the tiny sizes of config.json."""
    conf = golden["config"]
    tiny, args = conf["tiny"], conf["args"]
    vit_sd = golden["frozen"]["dinov2"]
    patch = vit_sd["patch_embed.proj.weight"].shape[-1]
    pos_grid = math.isqrt(vit_sd["pos_embed"].shape[1] - 1)
    cfg = get_sine_cfg(BASE_CONFIG, [
        "MODEL.DEVICE", "cpu",
        "MODEL.DINOV2.EMBED_DIM", tiny["vit"]["embed_dim"],
        "MODEL.DINOV2.DEPTH", tiny["vit"]["depth"],
        "MODEL.DINOV2.NUM_HEADS", tiny["vit"]["num_heads"],
        "MODEL.DINOV2.MLP_RATIO", float(tiny["vit"]["mlp_ratio"]),
        "MODEL.DINOV2.PATCH_SIZE", patch,
        "MODEL.DINOV2.IMG_SIZE", pos_grid * patch,
        "MODEL.DINOV2.WEIGHTS", dinov2,
        "MODEL.SEGIC.IMAGE_SIZE", tiny["img_size"],
        "MODEL.SEGIC.WIDTH", tiny["dec"]["width"],
        "MODEL.SEGIC.DEC_LAYERS", tiny["dec"]["depth"],
        "MODEL.SEGIC.NHEADS", tiny["dec"]["heads"],
        "MODEL.SEGIC.MLP_DIM", tiny["dec"]["mlp_dim"],
        "MODEL.SEGIC.MASK_IN_CHANS", tiny["mask_in_chans"],
        # SegIC's DINOv2 stack: stride patch/2 then 2 (7, 2 for /14 patches).
        "MODEL.SEGIC.MASK_DOWN_STRIDES", [patch // 2, 2],
        "MODEL.SEGIC.TAU", float(args["tau_simm"]),
        "MODEL.SEGIC.CROSS_ENTITY_PROMPT", bool(args["use_cross_inst_prompt"]),
        "MODEL.SEGIC.USE_TEXT", use_text,
        "MODEL.SEGIC.TEXT_ENCODER.WEIGHTS", clip_dir,
        "MODEL.SEGIC.TEXT_ENCODER.HIDDEN_SIZE", tiny["text_config"]["hidden_size"],
        "MODEL.SEGIC.TRAIN.TEXT_KEEP_RATIO", float(args["diff_text_prompt_ratio"]),
        "MODEL.SEGIC.TRAIN.REVERSE_CONTEXT", bool(args["reverse_context"]),
    ])
    return cfg


def pair_image(model, inputs: Dict, pair: str, side: str) -> torch.Tensor:
    """(3, S, S) model input of one side ("ref" / "tar") of a pair: the stored resized image
    (uint8, or float 0-255), its content cropped and normalised by the model."""
    key, size_key = ("image_dual", "ori_size_dual") if side == "ref" else ("image", "ori_size")
    h, w = inputs[f"pair.{pair}.{size_key}"].tolist()
    return model.preprocess_image(inputs[f"pair.{pair}.{key}"][:, :h, :w].float())


def pair_masks(inputs: Dict, pair: str, side: str) -> torch.Tensor:
    """(n, S, S) bool labels of one side, thresholded as the official ``(label/255) > 0.5``."""
    label = inputs[f"pair.{pair}.{'label_dual' if side == 'ref' else 'label'}"]
    return label if label.dtype == torch.bool else label / 255 > 0.5


def pair_names(golden: Dict, pair: str, n: int) -> Optional[List[str]]:
    """Entity class names of a pair: None for an instance pair (task-description prompt)."""
    if bool(golden["inputs"][f"pair.{pair}.is_inst"]):
        return None
    return [golden["config"]["pairs"][pair]["class_name"]] * n


def prefixed(outputs: Dict, prefix: str) -> Dict:
    return {k[len(prefix):]: v for k, v in outputs.items() if k.startswith(prefix)}
