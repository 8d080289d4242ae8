#!/usr/bin/env python
"""Export a SINE model as two ONNX files: the encoder and the decoder-with-cached-references.

    python tools/export_onnx.py --config-file configs/Base-SINE.yaml --output export/ \\
        --num-id-tokens 3 --num-classes 2 MODEL.WEIGHTS models/pytorch_model.bin

Writes ``encoder.onnx`` (dynamic batch, square size --size, default MODEL.SINE.PAD_SIZE),
``decoder_nm{N}_nc{C}.onnx`` (one target, N reference masks, C classes) and ``export.json``.
Limits: one export per input size and per (reference masks, classes); auxiliary predictions and
post-processing are not exported (see sine/export/onnx.py). Needs ``pip install -e .[onnx]``.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", required=True, help="directory for the ONNX files")
    parser.add_argument("--size", type=int, default=0, help="square input size (0 = PAD_SIZE)")
    parser.add_argument("--num-id-tokens", type=int, default=1, help="reference masks (nm)")
    parser.add_argument("--num-classes", type=int, default=1, help="reference classes (nc)")
    parser.add_argument("--skip-encoder", action="store_true")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    import torch
    from detectron2.modeling import build_model

    from sine.checkpoint import SINECheckpointer
    from sine.config import get_sine_cfg
    from sine.export.onnx import export_decoder, export_encoder, write_manifest

    cfg = get_sine_cfg(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        SINECheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        print("warning: MODEL.WEIGHTS is empty; exporting random weights", file=sys.stderr)
    os.makedirs(args.output, exist_ok=True)
    manifest = {}
    with torch.no_grad():
        if not args.skip_encoder:
            path = os.path.join(args.output, "encoder.onnx")
            manifest["encoder.onnx"] = export_encoder(model, path, args.size or None)
            print("wrote", path)
        name = f"decoder_nm{args.num_id_tokens}_nc{args.num_classes}.onnx"
        path = os.path.join(args.output, name)
        manifest[name] = export_decoder(model, path, args.num_id_tokens, args.num_classes,
                                        args.size or None)
        print("wrote", path)
    print("wrote", write_manifest(args.output, manifest))


if __name__ == "__main__":
    main()
