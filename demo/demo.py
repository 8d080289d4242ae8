#!/usr/bin/env python
"""Segment your own images with SINE (or SegIC), given a reference image and its mask(s).

    python demo/demo.py --config-file configs/demo/sine_synthetic_tiny.yaml \
        --ref-image ref.jpg --ref-mask cat.png dog.png --ref-class 0 1 --ref-name cat dog \
        --input "targets/*.jpg" --output out/ --opts MODEL.WEIGHTS output/demo/model_final.pth

Any in-context model's config runs unchanged (e.g. ``configs/segic/Base-SegIC.yaml``; SegIC
gives the ID and semantic results, and reads ``--ref-name`` as its text prompt).

The reference can also come from a COCO annotation file (``--ref-coco ann.json --ref-image-id N``:
every non-crowd annotation of image N is one reference mask, its class the category id).
For every target ``<name>.<ext>`` it writes to ``--output``:

* ``<name>_sine.png``: the ID, instance and semantic results side by side (demo/visualize.py);
* ``<name>_masks.npz``: the masks at the target's size (see demo/README.md for the arrays).

Masks must have exactly the size of their reference image; anything else is an error.
"""
import argparse
import contextlib
import glob
import io
import logging
import os
import sys
from typing import List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# First, even if PYTHONPATH holds it too: a script's own folder (demo/) leads sys.path, and there
# `demo` would be this file instead of the package.
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import detection_utils as utils  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from demo.visualize import (  # noqa: E402
    draw_panels,
    reference_class_names,
    semantic_masks,
    side_by_side,
)
from sine.engine.predictor import InContextPredictor, read_rgb  # noqa: E402

logger = logging.getLogger("sine.demo")

DEFAULT_CONFIG = os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="SINE in-context segmentation of your own images (ID, instances, semantic)."
    )
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    parser.add_argument("--ref-image", help="reference image (optional with --ref-coco)")
    parser.add_argument("--ref-mask", nargs="+", metavar="PNG",
                        help="one mask image per reference object (pixels > 0 = object)")
    parser.add_argument("--ref-class", nargs="+", type=int, metavar="ID",
                        help="class id of every reference mask (default: all 0; with "
                             "--ref-coco: the category ids)")
    parser.add_argument("--ref-name", nargs="+", metavar="NAME",
                        help="class name of every reference mask: captions, and SegIC's text "
                             "prompt 'a photo of a NAME' (with --ref-coco: the category names)")
    parser.add_argument("--neg-mask", nargs="+", metavar="PNG",
                        help="masks on the reference image of look-alikes to exclude ('not "
                             "this'): SegIC's 'another entity' tokens, SINE's suppressing class")
    parser.add_argument("--ref-coco", metavar="JSON", help="COCO instance annotation file")
    parser.add_argument("--ref-image-id", type=int, help="image id in --ref-coco")
    parser.add_argument("--ref-image-root", metavar="DIR",
                        help="folder of the COCO file names (default: the JSON's folder)")
    parser.add_argument("--input", nargs="+", required=True, metavar="GLOB",
                        help='target image(s): paths or quoted globs, e.g. "targets/*.jpg"')
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: MODEL.DEVICE")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score of the instance results drawn and saved")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS x.pth")
    return parser


def _read_mask_file(path: str, image_shape) -> np.ndarray:
    """A mask PNG -> (H, W) bool; errors name the file."""
    try:
        mask = utils.read_image(path, format="L")
    except Exception as e:
        raise ValueError(f"cannot read mask file {path!r}: {e}") from e
    if mask.shape[:2] != tuple(image_shape[:2]):
        raise ValueError(
            f"mask file {path!r} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its reference "
            f"image is {image_shape[1]}x{image_shape[0]}: masks must have the size of the image"
        )
    if not (mask > 0).any():
        raise ValueError(f"mask file {path!r} is empty: it has no pixel > 0")
    return mask > 0


def load_mask_files(args) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """--ref-image + --ref-mask -> image (H, W, 3) uint8, masks (N, H, W) bool, labels (N,)."""
    if not args.ref_image:
        raise ValueError("--ref-mask needs --ref-image (the image the masks belong to)")
    image = read_rgb(args.ref_image)
    masks = np.stack([_read_mask_file(p, image.shape) for p in args.ref_mask])
    labels = np.zeros(len(masks), np.int64) if args.ref_class is None else args.ref_class
    return image, masks, np.asarray(labels, np.int64)


def load_coco_reference(args) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """--ref-coco + --ref-image-id -> image, masks (N, H, W) bool, category ids (N,)."""
    from pycocotools.coco import COCO

    if args.ref_image_id is None:
        raise ValueError("--ref-coco needs --ref-image-id (which image of the file to use)")
    if not os.path.isfile(args.ref_coco):
        raise ValueError(f"COCO annotation file {args.ref_coco!r} does not exist")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(args.ref_coco)
    except Exception as e:
        raise ValueError(f"cannot read COCO annotation file {args.ref_coco!r}: {e}") from e
    if args.ref_image_id not in coco.imgs:
        some = sorted(coco.imgs)[:10]
        raise ValueError(f"image id {args.ref_image_id} is not in {args.ref_coco!r} "
                         f"(it has e.g. {some})")
    info = coco.imgs[args.ref_image_id]
    root = args.ref_image_root or os.path.dirname(os.path.abspath(args.ref_coco))
    image = read_rgb(args.ref_image or os.path.join(root, info["file_name"]))
    anns = [a for a in coco.imgToAnns[args.ref_image_id] if not a.get("iscrowd", 0)]
    masks = [coco.annToMask(a) > 0 for a in anns]
    keep = [i for i, m in enumerate(masks) if m.any()]
    if not keep:
        raise ValueError(f"image id {args.ref_image_id} of {args.ref_coco!r} has no non-empty, "
                         "non-crowd annotation to use as reference")
    masks = np.stack([masks[i] for i in keep])
    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"annotations of image id {args.ref_image_id} are "
                         f"{masks.shape[2]}x{masks.shape[1]} but the image is "
                         f"{image.shape[1]}x{image.shape[0]}")
    labels = [anns[i]["category_id"] for i in keep] if args.ref_class is None else args.ref_class
    args.coco_names = [coco.cats.get(anns[i]["category_id"], {}).get("name") or "" for i in keep]
    return image, masks, np.asarray(labels, np.int64)


def load_reference(args) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference of the command line: image (H, W, 3), masks (N, H, W), labels (N,)."""
    if bool(args.ref_mask) == bool(args.ref_coco):
        raise ValueError("give the reference either as --ref-image IMG --ref-mask PNG [PNG ...] "
                         "or as --ref-coco JSON --ref-image-id N")
    image, masks, labels = load_mask_files(args) if args.ref_mask else load_coco_reference(args)
    if len(labels) != len(masks):
        raise ValueError(f"--ref-class gives {len(labels)} class ids for {len(masks)} masks: "
                         "give one per mask")
    return image, masks, labels


def reference_names(args, num_masks: int) -> Optional[List[str]]:
    """--ref-name (one per mask), else the COCO category names of --ref-coco, else None."""
    if args.ref_name is not None:
        if len(args.ref_name) != num_masks:
            raise ValueError(f"--ref-name gives {len(args.ref_name)} names for {num_masks} "
                             "masks: give one per mask")
        return list(args.ref_name)
    return getattr(args, "coco_names", None)


def expand_inputs(patterns: List[str]) -> List[str]:
    """Paths and globs -> sorted existing files; unmatched patterns and name clashes are errors."""
    files = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise ValueError(f"--input {pattern!r} matches no file")
        files.extend(m for m in matches if os.path.isfile(m))
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(f"several targets are named {clashes}: outputs are named after the "
                         "file name, so rename them or run them separately")
    return files


def save_masks(path: str, result: dict, sem_thresh: float, score_thresh: float):
    """The masks of one target as a compressed npz (arrays listed in demo/README.md)."""
    arrays = {}
    if "id" in result:
        ids = result["id"].to("cpu")
        order = torch.argsort(ids.pred_ids, stable=True)  # row k <-> reference mask k
        arrays.update(id_masks=ids.pred_masks[order], id_ids=ids.pred_ids[order],
                      id_scores=ids.scores[order], id_classes=ids.pred_classes[order])
    if "instances" in result:
        inst = result["instances"].to("cpu")
        inst = inst[inst.scores > score_thresh]
        arrays.update(instance_masks=inst.pred_masks, instance_scores=inst.scores,
                      instance_classes=inst.pred_classes)
    if "sem_seg" in result:
        arrays.update(semantic_masks=semantic_masks(result["sem_seg"], sem_thresh),
                      semantic_classes=result["sem_seg_classes"].cpu())
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in arrays.items()})


def build_predictor(args) -> InContextPredictor:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available: use --device cpu")
    if not os.path.isfile(args.config_file):
        raise ValueError(f"config file {args.config_file!r} does not exist")
    return InContextPredictor.from_config_file(args.config_file, opts=args.opts,
                                               device=args.device)


def run(args) -> List[str]:
    """Segment every target; returns the written ``<name>_sine.png`` paths."""
    targets = expand_inputs(args.input)
    image, masks, labels = load_reference(args)
    names = reference_names(args, len(masks))
    predictor = build_predictor(args)
    negatives = None
    if args.neg_mask:
        negatives = np.stack([_read_mask_file(p, image.shape) for p in args.neg_mask])
    tokens = predictor.set_reference(image, masks, labels.tolist(), names=names,
                                     negatives=negatives)
    class_names = reference_class_names(tokens)
    sem_thresh = predictor.cfg.MODEL.SINE.TEST.SEM_SEG_THRESH
    os.makedirs(args.output, exist_ok=True)
    written = []
    for path in tqdm(targets, desc="segment", unit="image"):
        target = read_rgb(path)
        result = predictor.predict(target)
        name = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        panels = draw_panels(target, result, sem_thresh, args.confidence_threshold,
                             class_names)
        Image.fromarray(side_by_side(list(panels.values()))).save(name + "_sine.png")
        save_masks(name + "_masks.npz", result, sem_thresh, args.confidence_threshold)
        written.append(name + "_sine.png")
    logger.info("wrote %d result(s) to %s", len(written), args.output)
    return written


def main(argv: Optional[List[str]] = None) -> List[str]:
    args = get_parser().parse_args(argv)
    setup_logger(name="sine")
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    try:
        main()
    except ValueError as e:
        sys.exit(f"error: {e}")
