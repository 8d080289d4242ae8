#!/usr/bin/env python
"""Check an official SINE checkpoint against a sine model and write it in detectron2 format.

The official keys already equal sine's, so the weights are copied unchanged; the tool verifies
every key and shape against a model built from the config and prints a key report. Example:

    python tools/convert_official_checkpoint.py --config-file configs/Base-SINE.yaml \\
        --input pytorch_model.bin --output sine_vitl.pth \\
        [--dinov2-weights dinov2_vitl14_pretrain.pth] [MODEL.SINE.NUM_QUERIES 200 ...]

The output ``{"model": state_dict}`` loads with ``DetectionCheckpointer(model).load(...)``
(``MODEL.WEIGHTS``); the official flat file loads that way too. If the official file has no
DINOv2 weights, either pass ``--dinov2-weights`` to include them or set ``MODEL.DINOV2.WEIGHTS``
when using the converted file.
"""
import argparse
import logging
import sys

import torch
from detectron2.modeling import META_ARCH_REGISTRY

import sine  # noqa: F401  (registers the model)
from sine.checkpoint import ENCODER_PREFIX, compare_state_dict, read_official_state_dict
from sine.config import get_sine_cfg
from sine.modeling.backbone.dinov2 import read_dinov2_state_dict

logger = logging.getLogger("sine.convert")


def build_key_model(cfg):
    """The model on the meta device (no memory, no weights loaded): only its keys are needed."""
    weights = cfg.MODEL.DINOV2.WEIGHTS
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DINOV2.WEIGHTS = ""
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    # As if built with the weights: encoder keys absent from a checkpoint are then provided.
    model.image_encoder.encoder_weights = weights
    return model


def add_dinov2_weights(state_dict, path):
    """Add the ``teacher``-format DINOv2 file at ``path`` under ``image_encoder.encoder.``."""
    if any(k.startswith(ENCODER_PREFIX) for k in state_dict):
        raise ValueError("The checkpoint already holds DINOv2 weights; drop --dinov2-weights.")
    merged = dict(state_dict)
    merged.update({ENCODER_PREFIX + k: v for k, v in read_dinov2_state_dict(path).items()})
    return merged


def convert(cfg, input_path, output_path, dinov2_weights=""):
    """Check and write; returns the KeyReport. Raises ValueError when keys don't fit."""
    state_dict = read_official_state_dict(input_path)
    if dinov2_weights:
        state_dict = add_dinov2_weights(state_dict, dinov2_weights)
    report = compare_state_dict(build_key_model(cfg), state_dict)
    enc_missing = [k for k in report.missing if k.startswith(ENCODER_PREFIX)]
    other_problems = [k for k in report.missing if not k.startswith(ENCODER_PREFIX)]
    print(report.format())
    if other_problems or report.unexpected or report.bad_shapes:
        raise ValueError(f"{input_path} does not fit the model built from the config (see above).")
    if enc_missing or report.encoder_from_weights:
        print(
            f"NOTE: {input_path} holds no DINOv2 weights; load the converted file into a model "
            "built with MODEL.DINOV2.WEIGHTS set, or rerun with --dinov2-weights."
        )
    torch.save({"model": state_dict}, output_path)
    print(f"wrote {output_path} ({len(state_dict)} tensors)")
    return report


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default="", metavar="FILE", help="sine config (yaml)")
    parser.add_argument("--input", required=True, help="official SINE state dict")
    parser.add_argument("--output", required=True, help="detectron2 checkpoint to write (.pth)")
    parser.add_argument("--dinov2-weights", default="",
                        help="official DINOv2 checkpoint to include (if the input has none)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    cfg = get_sine_cfg(args.config_file, args.opts)
    try:
        convert(cfg, args.input, args.output, args.dinov2_weights)
    except ValueError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())  # pragma: no cover
