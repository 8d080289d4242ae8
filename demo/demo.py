#!/usr/bin/env python
"""Segment your own images with SINE, given a reference image and its mask(s).

    python demo/demo.py --config-file configs/demo/sine_synthetic_tiny.yaml \
        --ref-image ref.jpg --ref-mask cat.png dog.png --ref-names cat dog \
        --input targets/ --output out/ MODEL.WEIGHTS output/demo/model_final.pth

The reference can also come from a COCO annotation file (``--ref-coco ann.json --ref-image-id N``:
every non-crowd annotation of image N is one reference mask, its class the category id and its
name the category name). ``--input`` takes files, folders, quoted globs and .txt lists of paths.
For every target ``<name>.<ext>`` it writes to ``--output``:

* ``<name>_sine.png``: the reference with its masks, then the ID, instance and semantic results
  (demo/visualize.py), drawn at most ``--vis-max-side`` pixels per side;
* ``<name>_masks.npz``: the masks at the target's full size (see demo/README.md for the arrays).

Every target is checked before anything is written; an unreadable one stops the command
(``--skip-errors`` reports and skips it instead). Files are written atomically, and a summary
of successes and failures ends the run. Config overrides are ``KEY VALUE`` pairs at the end of
the line, as for train_net.py (``--opts KEY VALUE`` still works, deprecated).
"""
import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Run as a script, this folder comes first on sys.path and `demo` would be demo/demo.py.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, ROOT)]

# Only light modules at import time: `--help` must not wait for torch / detectron2.
from sine.utils.cli import (  # noqa: E402
    add_acceleration_flag,
    add_common_flags,
    add_config_file_flag,
    run_cli,
    split_config_overrides,
)

logger = logging.getLogger("sine.demo")

VIS_MAX_SIDE = 1600  # default longest side of the drawn overlays (masks are saved at full size)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="SINE in-context segmentation of your own images (ID, instances, semantic).",
        epilog="Config overrides go last: ... --output out/ MODEL.WEIGHTS model.pth",
    )
    add_config_file_flag(parser)
    parser.add_argument("--ref-image", help="reference image (optional with --ref-coco)")
    parser.add_argument("--ref-mask", nargs="+", metavar="PNG",
                        help="mask file(s) of the reference: binary (one object) or label maps "
                             "(one object per non-zero value)")
    parser.add_argument("--ref-class", nargs="+", metavar="ID",
                        help="class id (integer >= 0) of every reference object (default: one "
                             "class per --ref-names name, else all 0; with --ref-coco: the "
                             "category ids)")
    parser.add_argument("--ref-names", "--ref-name", nargs="+", metavar="NAME",
                        dest="ref_names",
                        help="name of every reference object, shown in the outputs and used as "
                             "SegIC's text prompt 'a photo of a NAME' (objects with the same "
                             "name are one class unless --ref-class says otherwise)")
    parser.add_argument("--neg-mask", nargs="+", metavar="PNG",
                        help="masks on the reference image of look-alikes to exclude ('not "
                             "this'): SegIC's 'another entity' tokens, SINE's suppressing class")
    parser.add_argument("--ref-coco", metavar="JSON", help="COCO instance annotation file")
    parser.add_argument("--ref-image-id", type=int, help="image id in --ref-coco")
    parser.add_argument("--ref-image-root", metavar="DIR",
                        help="folder of the COCO file names (default: the JSON's folder)")
    parser.add_argument("--mask-threshold", type=float, metavar="T",
                        help="binarise soft masks (JPEG, anti-aliased, float) at this fraction "
                             "of their value range, e.g. 0.5 (default: refuse them)")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="target image(s): files, folders, quoted globs (\"targets/*.jpg\") "
                             "or .txt files listing one path per line")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--skip-errors", action="store_true",
                        help="report unreadable targets and go on (default: stop before "
                             "writing anything)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
    add_acceleration_flag(parser)
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score of the instance results drawn and saved")
    parser.add_argument("--vis-max-side", type=int, default=VIS_MAX_SIDE, metavar="PX",
                        help=f"longest side of the drawn overlays (default {VIS_MAX_SIDE})")
    return add_common_flags(parser)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    head, opts = split_config_overrides(argv)
    args = get_parser().parse_args(head)
    args.opts = [*args.opts_deprecated, *args.opts, *opts]
    return args


# ------------------------------------------------------------------------------- reference
@dataclass
class Reference:
    """The reference of the command line: image (H, W, 3), masks (N, H, W), classes and names."""

    image: object
    masks: object
    classes: List[int]
    names: dict = field(default_factory=dict)  # class id -> name


def _cli_class_ids(values, count):
    from sine.data.user_inputs import UserInputError, class_ids

    ints = []
    for v in values:
        try:
            ints.append(int(v, 10))
        except ValueError:
            raise UserInputError(f"--ref-class {v!r} is not an integer: class ids are integers "
                                 ">= 0, one per reference object") from None
    return class_ids(ints, count, "--ref-class")


def load_mask_files(args) -> Reference:
    from sine.data.user_inputs import UserInputError, read_image, read_masks

    if not args.ref_image:
        raise UserInputError("--ref-mask needs --ref-image (the image the masks belong to)")
    image = read_image(args.ref_image, "--ref-image")
    masks = read_masks(args.ref_mask, image.shape, "--ref-mask", args.mask_threshold)
    return Reference(image, masks, [])


def load_coco_reference(args) -> Reference:
    """--ref-coco + --ref-image-id -> every non-crowd annotation of that image."""
    import contextlib
    import io

    import numpy as np

    from sine.data.user_inputs import UserInputError, read_image

    if args.ref_image_id is None:
        raise UserInputError("--ref-coco needs --ref-image-id (which image of the file to use)")
    if not os.path.isfile(args.ref_coco):
        raise UserInputError(f"COCO annotation file {args.ref_coco!r} does not exist")
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(args.ref_coco)
    except Exception as e:
        raise UserInputError(f"cannot read COCO annotation file {args.ref_coco!r}: {e}") from e
    if args.ref_image_id not in coco.imgs:
        some = sorted(coco.imgs)[:10]
        raise UserInputError(f"image id {args.ref_image_id} is not in {args.ref_coco!r} "
                             f"(it has e.g. {some})")
    info = coco.imgs[args.ref_image_id]
    root = args.ref_image_root or os.path.dirname(os.path.abspath(args.ref_coco))
    image = read_image(args.ref_image or os.path.join(root, info["file_name"]),
                       f"image {args.ref_image_id} of {args.ref_coco!r}")
    anns = [a for a in coco.imgToAnns[args.ref_image_id] if not a.get("iscrowd", 0)]
    try:
        masks = [coco.annToMask(a) > 0 for a in anns]
    except Exception as e:
        raise UserInputError(f"bad segmentation in {args.ref_coco!r} for image "
                             f"{args.ref_image_id}: {e}") from e
    keep = [i for i, m in enumerate(masks) if m.any()]
    if not keep:
        raise UserInputError(f"image id {args.ref_image_id} of {args.ref_coco!r} has no "
                             "non-empty, non-crowd annotation to use as reference")
    masks = np.stack([masks[i] for i in keep])
    if masks.shape[1:] != image.shape[:2]:
        raise UserInputError(f"annotations of image id {args.ref_image_id} are "
                             f"{masks.shape[2]}x{masks.shape[1]} but the image is "
                             f"{image.shape[1]}x{image.shape[0]}")
    classes = [anns[i]["category_id"] for i in keep]
    names = {c: coco.cats[c].get("name", str(c)) for c in classes if c in coco.cats}
    return Reference(image, masks, classes, names)


def load_reference(args) -> Reference:
    """Reads and validates the reference of the command line (before any model is built)."""
    from sine.data.user_inputs import UserInputError, class_ids

    if bool(args.ref_mask) == bool(args.ref_coco):
        raise UserInputError("give the reference either as --ref-image IMG --ref-mask PNG "
                             "[PNG ...] or as --ref-coco JSON --ref-image-id N")
    ref = load_mask_files(args) if args.ref_mask else load_coco_reference(args)
    n = len(ref.masks)
    if args.ref_class is not None:
        ref.classes = _cli_class_ids(args.ref_class, n)
    if args.ref_names is not None:
        if len(args.ref_names) != n:
            raise UserInputError(f"--ref-names gives {len(args.ref_names)} name(s) for {n} "
                                 "reference object(s) (a label map counts one object per value)"
                                 ": give one name per object")
        if not ref.classes:  # one class per distinct name, in order of appearance
            order = list(dict.fromkeys(args.ref_names))
            ref.classes = [order.index(name) for name in args.ref_names]
        names = {}
        for c, name in zip(ref.classes, args.ref_names):
            if names.setdefault(c, name) != name:
                raise UserInputError(f"class {c} is named both {names[c]!r} and {name!r} in "
                                     "--ref-names: give one name per class")
        ref.names = names
    if not ref.classes:
        ref.classes = [0] * n
    ref.classes = class_ids(ref.classes, n, "class ids")
    return ref


# ----------------------------------------------------------------------------------- batch
@dataclass
class BatchSummary:
    """What a run did: written ``<name>_sine.png`` paths and ``(target, reason)`` failures."""

    written: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return 3 if self.failed else 0  # 3: finished, but some targets were skipped

    def report(self) -> str:
        lines = [f"{len(self.written)} target(s) written, {len(self.failed)} failed"]
        lines += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def output_stems(targets: List[str]) -> List[str]:
    """Output names (file stems); a clash would overwrite results, so it is an error."""
    from sine.data.user_inputs import UserInputError

    stems = [os.path.splitext(os.path.basename(f))[0] for f in targets]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise UserInputError(f"several targets are named {clashes}: outputs are named after the "
                             "file name, so rename them or run them separately")
    return stems


def check_targets(targets: List[str], skip_errors: bool, summary: BatchSummary) -> List[str]:
    """Decode every target once before writing anything; returns the readable ones."""
    from sine.data.user_inputs import UserInputError, read_image

    ok = []
    for path in targets:
        try:
            read_image(path, "target")
        except UserInputError as e:
            if not skip_errors:
                raise UserInputError(f"{e} (nothing was written; --skip-errors skips "
                                     "unreadable targets)") from e
            logger.warning("skipping %s", e)
            summary.failed.append((path, str(e)))
        else:
            ok.append(path)
    return ok


def save_masks(path: str, result: dict, sem_thresh: float, score_thresh: float,
               names: Optional[dict] = None):
    """The masks of one target as a compressed npz (arrays listed in demo/README.md)."""
    import numpy as np
    import torch

    from demo.visualize import semantic_masks
    from sine.utils.io import atomic_write

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
    if names:
        classes = sorted(names)
        arrays.update(class_ids=np.asarray(classes, np.int64),
                      class_names=np.asarray([names[c] for c in classes], dtype=str))
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})


def save_png(path: str, rgb) -> None:
    from PIL import Image

    from sine.utils.io import atomic_write

    with atomic_write(path, "wb") as f:
        Image.fromarray(rgb).save(f, format="PNG")


def build_predictor(args):
    from sine.engine.predictor import InContextPredictor

    return InContextPredictor.from_config_file(args.config_file, opts=args.opts,
                                               device=args.device,
                                               acceleration=args.acceleration)


def run(args) -> BatchSummary:
    """Segment every target; ``summary.written`` lists the ``<name>_sine.png`` files."""
    from tqdm import tqdm

    from demo.visualize import draw_reference, draw_result
    from sine.data.user_inputs import UserInputError, expand_image_inputs, read_image, read_masks

    summary = BatchSummary()
    targets = expand_image_inputs(args.input, "--input")
    output_stems(targets)
    ref = load_reference(args)
    predictor = build_predictor(args)  # config, weights and device are checked here
    targets = check_targets(targets, args.skip_errors, summary)
    negatives = None
    if args.neg_mask:
        negatives = read_masks(args.neg_mask, ref.image.shape, "--neg-mask", args.mask_threshold)
    predictor.set_reference(ref.image, ref.masks, ref.classes,
                            names=[ref.names.get(c) for c in ref.classes] if ref.names else None,
                            negatives=negatives)
    sem_thresh = predictor.cfg.MODEL.SINE.TEST.SEM_SEG_THRESH
    ref_panel = draw_reference(ref.image, ref.masks, ref.classes, ref.names, args.vis_max_side)
    os.makedirs(args.output, exist_ok=True)
    for path in tqdm(targets, desc="SINE", unit="image"):
        name = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        try:
            target = read_image(path, "target")
            result = predictor.predict(target)
            canvas = draw_result(target, result, sem_thresh, args.confidence_threshold,
                                 names=ref.names, reference=ref_panel,
                                 max_side=args.vis_max_side)
            del target
            save_masks(name + "_masks.npz", result, sem_thresh, args.confidence_threshold,
                       ref.names)
            save_png(name + "_sine.png", canvas)
        except UserInputError as e:
            if not args.skip_errors:
                raise
            logger.warning("skipping %s", e)
            summary.failed.append((path, str(e)))
            continue
        summary.written.append(name + "_sine.png")
    print(summary.report(), file=sys.stderr)
    return summary


def main(argv: Optional[List[str]] = None) -> BatchSummary:
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="sine")
    return run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_cli(main))
