"""Pre-label a folder of images from a few annotated references (in-context segmentation).

    python -m sine.label --ref-coco refs.json --images photos/ --output prelabels.json \\
        [--overlays overlays/] [--score-thresh 0.5] MODEL.WEIGHTS model_final.pth

* References: every non-crowd annotation of the images of ``--ref-coco`` (K shots, any number
  of categories; ``--ref-image-ids`` picks some images). Category ids and names come from it.
  Their features are computed once (``InContextPredictor.set_reference``) for the whole folder.
* Images: folders, globs or .txt lists (as demo/demo.py ``--input``).
* Output: a COCO instance file (``images``, ``categories`` with names, ``annotations`` with RLE
  masks, boxes, areas and ``score``), loadable with ``pycocotools.coco.COCO`` and, as a result
  list (its ``annotations``), with ``COCO.loadRes``. Image ids number the images in path order.
* Resume: every labelled image is appended to ``<output>.partial.jsonl``; an interrupted run
  started again with the same arguments skips the images already there, and the final file is
  the same as an uninterrupted run's. The output is written atomically at the end.
* A progress bar while running, throughput in images/s at the end. Unreadable images stop the
  run (nothing is labelled) unless ``--skip-errors``.

Uses the public predictor API only (``from_config_file``, ``set_reference``, ``predict``).
"""
import argparse
import hashlib
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional

from .utils.cli import (
    add_acceleration_flag,
    add_common_flags,
    add_config_file_flag,
    run_cli,
    split_config_overrides,
)

logger = logging.getLogger("sine.label")

def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sine.label",
        description="Pre-label a folder of images with SINE from annotated references; writes "
                    "COCO instance predictions (RLE masks, scores, category names).",
        epilog="Config overrides go last: ... --output out.json MODEL.WEIGHTS model.pth")
    add_config_file_flag(parser)
    parser.add_argument("--ref-coco", required=True, metavar="JSON",
                        help="COCO instance annotations of the reference image(s)")
    parser.add_argument("--ref-image-root", metavar="DIR",
                        help="folder of the reference file names (default: the JSON's folder)")
    parser.add_argument("--ref-image-ids", nargs="+", type=int, metavar="ID",
                        help="reference images to use (default: every annotated image)")
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH",
                        help="images to label: files, folders, quoted globs or .txt lists")
    parser.add_argument("--output", required=True, metavar="JSON", help="COCO output file")
    parser.add_argument("--overlays", metavar="DIR", help="also draw each image's labels here")
    parser.add_argument("--score-thresh", type=float, default=0.5,
                        help="keep instances scoring above this (default 0.5)")
    parser.add_argument("--skip-errors", action="store_true",
                        help="report unreadable images and go on (default: stop before "
                             "labelling anything)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
    add_acceleration_flag(parser)
    return add_common_flags(parser)


# ------------------------------------------------------------------------------ references
def load_references(path: str, root: Optional[str], image_ids: Optional[List[int]]):
    """COCO file -> (images, masks per image (n_k, H, W), category ids per image, names)."""
    import contextlib
    import io

    import numpy as np
    from pycocotools.coco import COCO

    from .data.user_inputs import UserInputError, read_image

    if not os.path.isfile(path):
        raise UserInputError(f"--ref-coco {path!r} does not exist")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(path)
    except Exception as e:
        raise UserInputError(f"cannot read COCO file {path!r}: {e}") from e
    root = root or os.path.dirname(os.path.abspath(path))
    ids = image_ids or sorted(i for i in coco.imgs if coco.imgToAnns[i])
    if not ids:
        raise UserInputError(f"--ref-coco {path!r} has no annotated image to use as reference")
    images, masks, classes = [], [], []
    for i in ids:
        if i not in coco.imgs:
            raise UserInputError(f"--ref-image-ids: image id {i} is not in {path!r}")
        image = read_image(os.path.join(root, coco.imgs[i]["file_name"]),
                           f"reference image {i} of {path!r}")
        anns = [a for a in coco.imgToAnns[i] if not a.get("iscrowd", 0)]
        ms = [(coco.annToMask(a) > 0, a["category_id"]) for a in anns]
        ms = [(m, c) for m, c in ms if m.any()]
        if not ms:
            raise UserInputError(f"reference image {i} of {path!r} has no non-empty, non-crowd "
                                 "annotation")
        stack = np.stack([m for m, _ in ms])
        if stack.shape[1:] != image.shape[:2]:
            raise UserInputError(f"annotations of reference image {i} are {stack.shape[2]}x"
                                 f"{stack.shape[1]} but the image is {image.shape[1]}x"
                                 f"{image.shape[0]}")
        images.append(image)
        masks.append(stack)
        classes.append([int(c) for _, c in ms])
    used = sorted({c for cs in classes for c in cs})
    names = {c: coco.cats.get(c, {}).get("name", str(c)) for c in used}
    return images, masks, classes, names


# ------------------------------------------------------------------------- results journal
def run_fingerprint(args, images: List[str]) -> str:
    """What makes results comparable: references, model, thresholds, the image list."""
    with open(args.ref_coco, "rb") as f:
        ref = hashlib.sha256(f.read()).hexdigest()
    key = json.dumps([ref, args.ref_image_ids, os.path.abspath(args.config_file), args.opts,
                      args.score_thresh, [os.path.abspath(p) for p in images]]
                     # results differ slightly between speed options: never mix them
                     + ([args.acceleration] if args.acceleration != "fp32" else []))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def read_journal(path: str, fingerprint: str) -> Dict[str, dict]:
    """Results of an interrupted run with the same fingerprint: {image path: record}."""
    from .data.user_inputs import UserInputError

    if not os.path.exists(path):
        return {}
    done = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n >= len(lines) - 2:  # a line cut by the interruption: label that image again
                break
            raise UserInputError(f"{path!r} is corrupt at line {n + 1}: delete it to start "
                                 "over") from None
        if n == 0:
            if record.get("fingerprint") != fingerprint:
                raise UserInputError(
                    f"{path!r} holds partial results of a run with other references, model, "
                    "options or images: rerun with the same arguments, or delete it to start "
                    "over")
            continue
        done[record["path"]] = record
    return done


class Journal:
    """Append-only JSON lines, flushed and synced per image, so an interruption loses at most
    the image being labelled."""

    def __init__(self, path: str, fingerprint: str):
        new = not os.path.exists(path)
        self.f = open(path, "a", encoding="utf-8")
        if new:
            self.write({"fingerprint": fingerprint})

    def write(self, record: dict):
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


def encode_instances(instances, score_thresh: float) -> List[dict]:
    """``Instances`` -> COCO annotations without ids (RLE, bbox, area, score, category_id)."""
    import numpy as np
    from pycocotools import mask as mask_util

    inst = instances.to("cpu")
    keep = inst.scores > score_thresh
    masks = inst.pred_masks[keep].numpy()
    scores, classes = inst.scores[keep].tolist(), inst.pred_classes[keep].tolist()
    out = []
    for m, s, c in zip(masks, scores, classes):
        if not m.any():
            continue
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        out.append({
            "category_id": int(c), "score": round(float(s), 5),
            "segmentation": {"size": [int(x) for x in rle["size"]],
                             "counts": rle["counts"].decode("ascii")},
            "area": int(mask_util.area(rle)), "bbox": [float(x) for x in mask_util.toBbox(rle)],
            "iscrowd": 0,
        })
    return out


def assemble(images: List[str], done: Dict[str, dict], names: Dict[int, str]) -> dict:
    """The final COCO file: image ids 1.. in path order, annotation ids 1.. in that order."""
    coco = {"images": [], "annotations": [],
            "categories": [{"id": c, "name": n} for c, n in sorted(names.items())]}
    for image_id, path in enumerate(images, 1):
        record = done.get(os.path.abspath(path))
        if record is None:  # skipped (unreadable)
            continue
        coco["images"].append({"id": image_id, "file_name": path, "height": record["height"],
                               "width": record["width"]})
        for ann in record["annotations"]:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1,
                                        "image_id": image_id, **ann})
    return coco


# ------------------------------------------------------------------------------------ run
def label(args) -> dict:
    """Label every image; returns a summary {"labelled", "failed", "seconds", "images_per_s"}."""
    from tqdm import tqdm

    from .data.user_inputs import UserInputError, expand_image_inputs, read_image
    from .engine.predictor import InContextPredictor
    from .utils.io import atomic_write_json

    images = expand_image_inputs(args.images, "--images")
    ref_images, ref_masks, ref_classes, names = load_references(
        args.ref_coco, args.ref_image_root, args.ref_image_ids)
    journal_path = args.output + ".partial.jsonl"
    fingerprint = run_fingerprint(args, images)
    done = read_journal(journal_path, fingerprint)
    todo = [p for p in images if os.path.abspath(p) not in done]
    failed = []
    if not args.skip_errors:  # decode everything first: stop before labelling anything
        for path in todo:
            try:
                read_image(path, "image to label")
            except UserInputError as e:
                raise UserInputError(f"{e} (nothing was labelled; --skip-errors skips "
                                     "unreadable images)") from e
    predictor = InContextPredictor.from_config_file(args.config_file, opts=args.opts,
                                                    device=args.device,
                                                    acceleration=args.acceleration)
    predictor.set_reference(ref_images, ref_masks, ref_classes)  # once for the whole folder
    if done:
        logger.info("resuming: %d of %d image(s) already labelled", len(done), len(images))
    if args.overlays:
        os.makedirs(args.overlays, exist_ok=True)
    journal = Journal(journal_path, fingerprint)
    start = time.perf_counter()
    try:
        for path in tqdm(todo, desc="labelling", unit="image"):
            try:
                image = read_image(path, "image to label")
            except UserInputError as e:
                logger.warning("skipping %s", e)
                failed.append((path, str(e)))
                continue
            result = predictor.predict(image)
            record = {"path": os.path.abspath(path), "height": image.shape[0],
                      "width": image.shape[1],
                      "annotations": encode_instances(result["instances"], args.score_thresh)}
            if args.overlays:
                _draw_overlay(args.overlays, path, image, result, args.score_thresh, names)
            journal.write(record)
            done[record["path"]] = record
    finally:
        journal.close()
    seconds = time.perf_counter() - start
    atomic_write_json(args.output, assemble(images, done, names))
    os.unlink(journal_path)
    rate = len(todo) / seconds if seconds > 0 and todo else 0.0
    labelled = len(todo) - len(failed)
    print(f"labelled {labelled} image(s) in {seconds:.1f} s ({rate:.2f} images/s), "
          f"{len(images) - len(todo)} from a previous run, {len(failed)} failed; wrote "
          f"{args.output}", file=sys.stderr)
    for path, reason in failed:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    return {"labelled": labelled, "failed": failed, "seconds": seconds, "images_per_s": rate,
            "exit_status": 3 if failed else 0}


def _draw_overlay(folder, path, image, result, score_thresh, names):
    from PIL import Image

    from .utils.io import atomic_write
    from .utils.visualize import draw_panels, side_by_side

    panels = draw_panels(image, {"instances": result["instances"]}, 0.5, score_thresh, names,
                         max_side=1600)
    stem = os.path.splitext(os.path.basename(path))[0]
    with atomic_write(os.path.join(folder, f"{stem}.png"), "wb") as f:
        Image.fromarray(side_by_side(list(panels.values()))).save(f, format="PNG")


class _Summary(dict):
    @property
    def exit_status(self) -> int:
        return self["exit_status"]


def main(argv: Optional[List[str]] = None):
    head, opts = split_config_overrides(list(sys.argv[1:] if argv is None else argv))
    args = get_parser().parse_args(head)
    args.opts = [*args.opts_deprecated, *args.opts, *opts]
    from detectron2.utils.logger import setup_logger

    setup_logger(name="sine")
    return _Summary(label(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_cli(main))
