"""Your own COCO-format data end to end: register, fine-tune, evaluate; from any directory.

    # fine-tune from a checkpoint on your training set (CPU-sized by default: the demo model)
    python -m sine.own_data train --train-json my/train.json --train-images my/images \\
        --weights output/demo/model_final.pth --output runs/mine SOLVER.MAX_ITER 200
    # evaluate on held-out data: one-shot FSS mIoU and COCO mask AP
    python -m sine.own_data eval --test-json my/val.json --test-images my/images \\
        --weights runs/mine/model_final.pth --output runs/mine/eval

* Datasets are registered with ``register_coco_instances_with_ids``; a JSON whose annotations
  have no ``id`` gets ids 1, 2, ... (written next to the outputs as ``<name>_with_ids.json``).
* ``train`` trains only on the given data (``DATASETS.TEST`` is emptied: nothing to evaluate
  half-way), after checking the data loads, so a bad file fails before any iteration.
* ``eval`` reports (1) FSS-style mIoU over ``--episodes`` one-shot episodes drawn from the
  held-out instance masks (``sine.data.fss_episodes`` + ``FSSEvaluator``), and (2) COCO mask AP
  of the instance output through detectron2's ``COCOEvaluator``: every category of the held-out
  set gets ``--shots`` reference images (first images of the category in file order, all its
  instances there) from ``--ref-json``, or from the held-out set itself, whose reference images
  are then not scored; references are encoded once and every other held-out image is a target.
  Both go into ``<output>/evaluation.json``.
"""
import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from .utils.cli import add_common_flags, add_config_file_flag, run_cli, split_config_overrides

logger = logging.getLogger("sine.own_data")

def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sine.own_data",
        description="Fine-tune SINE on your own COCO-format instance data and evaluate it.",
        epilog="Config overrides go last: ... SOLVER.MAX_ITER 200 SOLVER.BASE_LR 1e-4")
    sub = parser.add_subparsers(dest="command", required=True)
    example = sub.add_parser("example", help="write a small COCO-format dataset to try the "
                             "walkthrough on (squares and disks; val annotations without ids)")
    example.add_argument("folder", help="where to write train/, val/, train.json, val.json")
    example.add_argument("--num-train", type=int, default=16)
    example.add_argument("--num-val", type=int, default=8)
    train = sub.add_parser("train", help="fine-tune on a COCO-format instance dataset")
    train.add_argument("--train-json", required=True, help="COCO instances JSON")
    train.add_argument("--train-images", required=True, help="folder of its file_names")
    train.add_argument("--name", default="own_train", help="dataset name to register")
    train.add_argument("--resume", action="store_true", help="continue from --output's last "
                       "checkpoint")
    ev = sub.add_parser("eval", help="one-shot FSS mIoU and COCO mask AP on held-out data")
    ev.add_argument("--test-json", required=True, help="held-out COCO instances JSON")
    ev.add_argument("--test-images", required=True, help="folder of its file_names")
    ev.add_argument("--ref-json",
                    help="COCO instances JSON the AP references come from (e.g. the training "
                         "set); default: the held-out set itself, whose reference images are "
                         "then left out of the AP")
    ev.add_argument("--ref-images", help="folder of --ref-json's file_names")
    ev.add_argument("--name", default="own_test", help="dataset name to register")
    ev.add_argument("--shots", type=int, default=1, help="reference images per category")
    ev.add_argument("--episodes", type=int, default=200, help="FSS episodes (one-shot)")
    ev.add_argument("--seed", type=int, default=0, help="FSS episode seed")
    add_common_flags(example)
    for p in (train, ev):
        add_config_file_flag(p)
        p.add_argument("--weights", help="checkpoint to start from / to evaluate "
                                         "(MODEL.WEIGHTS)")
        p.add_argument("--output", required=True, help="output folder")
        p.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
        add_common_flags(p)
    return parser


# ------------------------------------------------------------------------------ datasets
def register_own_dataset(name: str, json_file: str, image_root: str, work_dir: str) -> str:
    """Register a COCO instances JSON (annotation ids optional) as ``name``; returns the JSON
    actually registered (a copy with ids when the original has none)."""
    from detectron2.data import DatasetCatalog

    from .data.datasets import register_coco_instances_with_ids
    from .data.user_inputs import UserInputError

    for path, kind in ((json_file, "file"), (image_root, "folder")):
        if not (os.path.isfile(path) if kind == "file" else os.path.isdir(path)):
            raise UserInputError(f"{path!r} is not a {kind} (dataset {name!r})")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot read COCO file {json_file!r}: {e}") from e
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise UserInputError(f"{json_file!r} is not a COCO instances file: no {missing}")
    if any("id" not in a for a in data["annotations"]):
        taken = {a["id"] for a in data["annotations"] if "id" in a}
        next_id = 1
        for a in data["annotations"]:
            if "id" not in a:
                while next_id in taken:
                    next_id += 1
                a["id"] = next_id
                taken.add(next_id)
        from .utils.io import atomic_write_json

        json_file = os.path.join(work_dir, f"{name}_with_ids.json")
        atomic_write_json(json_file, data)
        logger.info("%s: annotations without ids numbered 1, 2, ... in %s", name, json_file)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        from detectron2.data import MetadataCatalog

        MetadataCatalog.remove(name)
    register_coco_instances_with_ids(name, {}, os.path.abspath(json_file),
                                     os.path.abspath(image_root))
    records = DatasetCatalog.get(name)  # load now: a bad file fails before any work
    if not any(r.get("annotations") for r in records):
        raise UserInputError(f"dataset {name!r} ({json_file!r}) has no annotated image")
    return json_file


def _config(args, datasets_train=(), datasets_test=()):
    from .utils.user_config import check_device, load_user_config

    cfg = load_user_config(args.config_file, args.opts)
    cfg.DATASETS.TRAIN = tuple(datasets_train)
    cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS = []
    cfg.DATASETS.TEST = tuple(datasets_test)
    cfg.OUTPUT_DIR = os.path.abspath(args.output)
    if args.weights:
        cfg.MODEL.WEIGHTS = os.path.abspath(args.weights)
    if args.device:
        cfg.MODEL.DEVICE = args.device
    check_device(cfg.MODEL.DEVICE)
    cfg.SOLVER.AMP.ENABLED = cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE.startswith("cuda")
    return cfg


def write_example_dataset(folder: str, num_train: int = 16, num_val: int = 8,
                          seed: int = 0) -> dict:
    """A small COCO-format instance dataset of one's "own": 128 x 96 images with 1-3 squares
    (category 1) and disks (category 2) on textured backgrounds; ``val.json`` has annotations
    without ``id`` (as many hand-made files). Returns the paths written."""
    import math

    import numpy as np
    from PIL import Image, ImageDraw

    from .utils.io import atomic_write_json

    rng = np.random.default_rng(seed)
    paths = {}
    for split, count in (("train", num_train), ("val", num_val)):
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        coco = {"images": [], "annotations": [],
                "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disk"}]}
        for i in range(count):
            h, w = 96, 128
            noise = rng.integers(90, 170, (h // 8, w // 8, 3), dtype=np.uint8)
            img = Image.fromarray(noise).resize((w, h), Image.BILINEAR)
            draw = ImageDraw.Draw(img)
            for k in range(int(rng.integers(1, 4))):
                cat = 1 + (i + k) % 2
                r = int(rng.integers(10, 18))
                cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
                if cat == 1:
                    poly = [cx - r, cy - r, cx + r, cy - r, cx + r, cy + r, cx - r, cy + r]
                    colour = (int(rng.integers(200, 255)), 40, 40)
                else:
                    poly = [v for t in range(16) for v in (
                        cx + r * math.cos(2 * math.pi * t / 16),
                        cy + r * math.sin(2 * math.pi * t / 16))]
                    colour = (40, 60, int(rng.integers(200, 255)))
                draw.polygon(poly, fill=colour)
                ann = {"image_id": i + 1, "category_id": cat, "iscrowd": 0,
                       "segmentation": [[round(v, 2) for v in poly]], "area": float(4 * r * r),
                       "bbox": [cx - r, cy - r, 2 * r, 2 * r]}
                if split == "train":
                    ann["id"] = len(coco["annotations"]) + 1
                coco["annotations"].append(ann)
            name = f"{split}_{i:03d}.png"
            img.save(os.path.join(folder, split, name))
            coco["images"].append({"id": i + 1, "file_name": name, "height": h, "width": w})
        paths[split] = os.path.join(folder, f"{split}.json")
        atomic_write_json(paths[split], coco)
    print(f"wrote {num_train} train and {num_val} val images with {folder}/train.json and "
          f"{folder}/val.json", file=sys.stderr)
    return paths


def _setup_loggers(output: str) -> None:
    """Log to the console and ``<output>/log.txt``; detectron2's logger prints the training
    progress (iteration, losses, ETA) and the evaluation tables."""
    from detectron2.utils.logger import setup_logger

    setup_logger(output=output, name="detectron2", abbrev_name="d2")
    setup_logger(output=output, name="sine")


# ---------------------------------------------------------------------------------- train
def train(args) -> str:
    """Fine-tune; returns the path of ``model_final.pth``."""
    from detectron2.utils.env import seed_all_rng

    from .engine.trainer import Trainer
    from .utils.user_config import check_weights_file

    os.makedirs(args.output, exist_ok=True)
    _setup_loggers(args.output)
    register_own_dataset(args.name, args.train_json, args.train_images, args.output)
    cfg = _config(args, datasets_train=(args.name,))
    check_weights_file(cfg.MODEL.WEIGHTS)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)
    with open(os.path.join(args.output, "config.yaml"), "w") as f:
        f.write(cfg.dump())
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    print(f"fine-tuned model: {final}", file=sys.stderr)
    return final


# ----------------------------------------------------------------------------------- eval
def pick_references(records, category_ids, shots, names=None):
    """``shots`` reference images per contiguous category: its first annotated images in
    file order, with every non-crowd instance of the category there."""
    import numpy as np

    from .data.user_inputs import UserInputError

    images, masks, labels = [], [], []
    for c in category_ids:
        found = 0
        for r in sorted(records, key=lambda r: r["file_name"]):
            anns = [a for a in r.get("annotations", [])
                    if a["category_id"] == c and not a.get("iscrowd", 0)]
            if not anns:
                continue
            ms = [_ann_mask(a, (r["height"], r["width"])) for a in anns]
            ms = [m for m in ms if m.any()]
            if not ms:
                continue
            images.append(r["file_name"])
            masks.append(np.stack(ms))
            labels.append([c] * len(ms))
            found += 1
            if found == shots:
                break
        if not found:
            name = names[c] if names else c
            raise UserInputError(f"category {name!r} has no annotated image in the reference "
                                 "data (--ref-json): every held-out category needs a reference")
    return images, masks, labels


def _ann_mask(ann, hw):
    """A detectron2 record annotation (polygons or RLE) -> (H, W) bool."""
    from pycocotools import mask as mask_util

    segm, (h, w) = ann["segmentation"], hw
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):
        rle = mask_util.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_util.decode(rle).astype(bool)


def ap_references(test_name, ref_name, shots):
    """(reference images, masks, labels) for every category of the held-out set, and the
    held-out records to score (reference images excluded when they come from that set)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .data.user_inputs import UserInputError

    test_meta, ref_meta = MetadataCatalog.get(test_name), MetadataCatalog.get(ref_name)
    test_records, ref_records = DatasetCatalog.get(test_name), DatasetCatalog.get(ref_name)
    if test_meta.thing_dataset_id_to_contiguous_id != ref_meta.thing_dataset_id_to_contiguous_id:
        raise UserInputError("--test-json and --ref-json must have the same categories (ids): "
                             "the references stand for the held-out categories")
    present = sorted({a["category_id"] for r in test_records for a in r.get("annotations", [])})
    refs = pick_references(ref_records, present, shots, test_meta.thing_classes)
    targets = test_records
    if ref_name == test_name:
        targets = [r for r in test_records if r["file_name"] not in set(refs[0])]
    if not targets:
        raise UserInputError(f"{test_name}: no held-out image is left to score after taking "
                             "the references: give --ref-json or more images")
    return refs, targets


def coco_mask_ap(cfg, test_name, refs, targets, output_dir):
    """COCO mask AP of the instance output on ``targets``, through detectron2's COCOEvaluator."""
    from detectron2.evaluation import COCOEvaluator
    from tqdm import tqdm

    from .engine.predictor import InContextPredictor

    predictor = InContextPredictor(cfg)
    predictor.set_reference(*refs)  # once for every target
    evaluator = COCOEvaluator(test_name, tasks=("segm",), distributed=False,
                              output_dir=output_dir)
    evaluator.reset()
    for r in tqdm(targets, desc="COCO AP", unit="image"):
        out = predictor.predict(r["file_name"], outputs={"instances"})
        evaluator.process([{"image_id": r["image_id"], "height": r["height"],
                            "width": r["width"]}], [{"instances": out["instances"].to("cpu")}])
    return evaluator.evaluate()["segm"]


def fss_miou(cfg, test_name, episodes, seed, shots=1):
    """One-shot FSS mIoU over episodes drawn from the held-out instance masks."""
    from detectron2.data import MetadataCatalog

    from .data.fss_episodes import register_fss_episodes
    from .engine.trainer import Trainer

    name = f"{test_name}_fss_{shots}shot"
    classes = sorted(MetadataCatalog.get(test_name).thing_dataset_id_to_contiguous_id.values())
    register_fss_episodes(name, test_name, classes, episodes, shots, seed, replace=True)
    cfg = cfg.clone()
    cfg.DATASETS.TEST = (name,)
    from .engine.predictor import build_in_context_model

    model = build_in_context_model(cfg)
    results = Trainer.test(cfg, model)  # detectron2 unwraps the dict of a single dataset
    return results.get(name, results)["fss"]


def evaluate(args) -> dict:
    from .data.user_inputs import UserInputError
    from .utils.io import atomic_write_json

    os.makedirs(args.output, exist_ok=True)
    _setup_loggers(args.output)

    register_own_dataset(args.name, args.test_json, args.test_images, args.output)
    ref_name = args.name
    if args.ref_json:
        if not args.ref_images:
            raise UserInputError("--ref-json needs --ref-images (the folder of its images)")
        ref_name = f"{args.name}_references"
        register_own_dataset(ref_name, args.ref_json, args.ref_images, args.output)
    cfg = _config(args)
    refs, targets = ap_references(args.name, ref_name, args.shots)  # fails before any work
    metrics = {"fss_1shot": fss_miou(cfg, args.name, args.episodes, args.seed),
               "coco_segm": coco_mask_ap(cfg, args.name, refs, targets, args.output),
               "ap_images": len(targets)}
    metrics["weights"] = cfg.MODEL.WEIGHTS
    atomic_write_json(os.path.join(args.output, "evaluation.json"), metrics)
    print(f"one-shot FSS mIoU {metrics['fss_1shot']['mIoU']:.2f}, COCO mask AP "
          f"{metrics['coco_segm']['AP']:.2f} (AP50 {metrics['coco_segm']['AP50']:.2f}); "
          f"wrote {os.path.join(args.output, 'evaluation.json')}", file=sys.stderr)
    return metrics


def main(argv: Optional[List[str]] = None):
    head, opts = split_config_overrides(list(sys.argv[1:] if argv is None else argv))
    args = get_parser().parse_args(head)
    args.opts = [*args.opts_deprecated, *args.opts, *opts]
    if args.command == "example":
        return write_example_dataset(args.folder, args.num_train, args.num_val)
    return train(args) if args.command == "train" else evaluate(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_cli(main))
