#!/usr/bin/env python
"""Check an official SINE or SegIC checkpoint against a sine model; write it in detectron2 format.

The official keys already equal sine's, so the weights are copied unchanged; the tool verifies
every key and shape against a model built from the config (SINE or SegIC, from
MODEL.META_ARCHITECTURE) and prints a key report. Examples:

    python tools/convert_official_checkpoint.py --config-file configs/Base-SINE.yaml \\
        --input pytorch_model.bin --output sine_vitl.pth \\
        [--dinov2-weights dinov2_vitl14_pretrain.pth] [MODEL.SINE.NUM_QUERIES 200 ...]

    python tools/convert_official_checkpoint.py --config-file configs/segic/Base-SegIC.yaml \\
        --input segic_dinov2l_160k.pth --output segic_vitl.pth \\
        [--dinov2-weights dinov2_vitl14_pretrain.pth] \\
        [--clip-text-dir clip-vit-large-patch14 --empty-prompt-embedding empty_prompt.pt]

The output ``{"model": state_dict}`` loads with ``DetectionCheckpointer(model).load(...)``
(``MODEL.WEIGHTS``); the official flat file loads that way too. If the official file has no
DINOv2 weights (SegIC's never has), either pass ``--dinov2-weights`` to include them or set
``MODEL.DINOV2.WEIGHTS`` when using the converted file. SegIC's CLIP text tower always comes
from ``MODEL.SEGIC.TEXT_ENCODER.WEIGHTS``; ``--empty-prompt-embedding`` additionally saves the
CLIP embedding of the empty prompt, which lets ``MODEL.SEGIC.USE_TEXT False`` run without CLIP
exactly as the official ``--no_text_eval`` (``MODEL.SEGIC.TEXT_ENCODER.EMPTY_PROMPT_EMBEDDING``).
"""
import argparse
import logging
import sys

# torch, detectron2 and sine are imported by the functions that run after parsing, so that
# `--help` answers at once.

logger = logging.getLogger("sine.convert")


def build_key_model(cfg):
    """The model on the meta device (no memory, no weights loaded): only its keys are needed.

    SegIC is built without its text tower, whose weights are never in a SegIC checkpoint.
    """
    import torch
    from detectron2.modeling import META_ARCH_REGISTRY

    weights = cfg.MODEL.DINOV2.WEIGHTS
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DINOV2.WEIGHTS = ""
    if cfg.MODEL.META_ARCHITECTURE == "SegIC":
        cfg.MODEL.SEGIC.USE_TEXT = False
        cfg.MODEL.SEGIC.TEXT_ENCODER.EMPTY_PROMPT_EMBEDDING = ""
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    # As if built with the weights: encoder keys absent from a checkpoint are then provided.
    if hasattr(model, "image_encoder"):
        model.image_encoder.encoder_weights = weights
    else:
        model.dinov2_weights = weights
    return model


def add_dinov2_weights(state_dict, path, prefix):
    """Add the ``teacher``-format DINOv2 file at ``path`` under ``prefix``."""
    from sine.modeling.backbone.dinov2 import read_dinov2_state_dict

    if any(k.startswith(prefix) for k in state_dict):
        raise ValueError("The checkpoint already holds DINOv2 weights; drop --dinov2-weights.")
    merged = dict(state_dict)
    merged.update({prefix + k: v for k, v in read_dinov2_state_dict(path).items()})
    return merged


def convert(cfg, input_path, output_path, dinov2_weights=""):
    """Check and write; returns the KeyReport. Raises ValueError when keys don't fit."""
    import torch

    from sine.checkpoint import compare_state_dict, frozen_prefixes, read_official_state_dict

    state_dict = read_official_state_dict(input_path)
    model = build_key_model(cfg)
    frozen = frozen_prefixes(model)  # DINOv2 first (SINE: image_encoder.encoder., SegIC: encoder.)
    if dinov2_weights:
        state_dict = add_dinov2_weights(state_dict, dinov2_weights, frozen[0])
    report = compare_state_dict(model, state_dict)
    frozen_missing = [k for k in report.missing if k.startswith(frozen)]
    other_problems = [k for k in report.missing if not k.startswith(frozen)]
    print(report.format())
    if other_problems or report.unexpected or report.bad_shapes:
        raise ValueError(f"{input_path} does not fit the model built from the config (see above).")
    if frozen_missing or report.encoder_from_weights:
        print(
            f"NOTE: {input_path} holds no frozen-tower weights; load the converted file into a "
            "model built with MODEL.DINOV2.WEIGHTS (and, for SegIC with text, "
            "MODEL.SEGIC.TEXT_ENCODER.WEIGHTS) set, or rerun with --dinov2-weights."
        )
    torch.save({"model": state_dict}, output_path)
    print(f"wrote {output_path} ({len(state_dict)} tensors)")
    return report


def write_empty_prompt_embedding(cfg, clip_text_dir, output_path):
    """Save the pooled CLIP embedding of "" (T_d,) for SegIC without a text tower."""
    import torch

    from sine.modeling.segic.text_encoder import (
        SegICTextEncoder,
        build_clip_tokenizer,
        load_clip_text_model,
    )

    encoder = SegICTextEncoder(load_clip_text_model(clip_text_dir),
                               build_clip_tokenizer(cfg.MODEL.SEGIC.TEXT_ENCODER.TOKENIZER))
    embedding = encoder([""])[0].cpu()
    torch.save(embedding, output_path)
    print(f"wrote {output_path} (CLIP embedding of the empty prompt, {tuple(embedding.shape)})")
    return embedding


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="", metavar="FILE", help="sine config (yaml)")
    parser.add_argument("--input", required=True, help="official SINE or SegIC state dict")
    parser.add_argument("--output", required=True, help="detectron2 checkpoint to write (.pth)")
    parser.add_argument("--dinov2-weights", default="",
                        help="official DINOv2 checkpoint to include (if the input has none)")
    parser.add_argument("--clip-text-dir", default="",
                        help="SegIC: local CLIP text directory (for --empty-prompt-embedding)")
    parser.add_argument("--empty-prompt-embedding", default="",
                        help="SegIC: also write the CLIP embedding of '' to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    from sine.config import get_sine_cfg  # registers the models

    cfg = get_sine_cfg(args.config_file, args.opts)
    if bool(args.clip_text_dir) != bool(args.empty_prompt_embedding):
        print("ERROR: --clip-text-dir and --empty-prompt-embedding go together", file=sys.stderr)
        return 1
    try:
        convert(cfg, args.input, args.output, args.dinov2_weights)
        if args.empty_prompt_embedding:
            write_empty_prompt_embedding(cfg, args.clip_text_dir, args.empty_prompt_embedding)
    except (ValueError, FileNotFoundError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())  # pragma: no cover
