#!/usr/bin/env python
"""Lay out PASCAL-Part for the one-shot part benchmark (datasets/README.md#pascal-part).

The part classes follow Matcher's pre-processing (parts merged, e.g. left/right legs into one
``LEG``), which is distributed as JSON annotations (``pascal.zip`` of the Matcher release). This
script puts them next to the VOC2010 images and checks that every image the index lists is there:

    python datasets/prepare_pascal_part.py --voc2010 /data/VOCdevkit/VOC2010 \\
        --matcher-annotations /data/pascal.zip [--root $DETECTRON2_DATASETS] [--copy]

It writes ``<root>/Pascal-Part/VOCdevkit/VOC2010/`` with ``JPEGImages/`` (symbolic links to the
VOC2010 images, or copies with ``--copy``), ``Annotations_Part_json_merged_part_classes/`` and
``all_obj_part_to_image.json``, and prints the evaluated classes per super-category.
"""
import argparse
import json
import os
import shutil
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ANNOTATIONS = "Annotations_Part_json_merged_part_classes"
INDEX = "all_obj_part_to_image.json"


def extract_annotations(archive, target):
    """Copy the merged-part JSONs and the index from ``archive`` (zip or folder) to ``target``."""
    if os.path.isdir(archive):
        for root, _, files in os.walk(archive):
            for name in files:
                if name == INDEX or os.path.basename(root) == ANNOTATIONS:
                    sub = "" if name == INDEX else ANNOTATIONS
                    os.makedirs(os.path.join(target, sub), exist_ok=True)
                    shutil.copy2(os.path.join(root, name), os.path.join(target, sub, name))
        return
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            parts = member.split("/")
            if parts[-1] == INDEX:
                rel = INDEX
            elif len(parts) >= 2 and parts[-2] == ANNOTATIONS and parts[-1]:
                rel = os.path.join(ANNOTATIONS, parts[-1])
            else:
                continue
            os.makedirs(os.path.dirname(os.path.join(target, rel)) or target, exist_ok=True)
            with zf.open(member) as src, open(os.path.join(target, rel), "wb") as dst:
                shutil.copyfileobj(src, dst)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc2010", required=True, help="VOC2010 folder (with JPEGImages/)")
    parser.add_argument("--matcher-annotations", required=True,
                        help="Matcher's pascal.zip, or the folder it extracts to")
    parser.add_argument("--root", default=None,
                        help="datasets root (default: $DETECTRON2_DATASETS, else datasets)")
    parser.add_argument("--copy", action="store_true", help="copy images instead of linking")
    args = parser.parse_args()
    # After parsing, so that `--help` answers at once.
    from inference_fss.benchmarks import PASCAL_PART_SUPERCATEGORIES, pascal_part_classes
    from sine.data.datasets.common import datasets_root

    args.root = args.root or datasets_root()

    target = os.path.join(args.root, "Pascal-Part", "VOCdevkit", "VOC2010")
    os.makedirs(target, exist_ok=True)
    extract_annotations(args.matcher_annotations, target)
    index_path = os.path.join(target, INDEX)
    if not os.path.isfile(index_path):
        sys.exit(f"{INDEX} not found in {args.matcher_annotations}")
    with open(index_path) as f:
        index = json.load(f)
    images = os.path.join(target, "JPEGImages")
    os.makedirs(images, exist_ok=True)
    missing = []
    for supercategory in PASCAL_PART_SUPERCATEGORIES:
        for obj in index[supercategory]["object"].values():
            for split in obj["part"].values():
                for image_id in split["val"]:
                    src = os.path.join(args.voc2010, "JPEGImages", f"{image_id}.jpg")
                    dst = os.path.join(images, f"{image_id}.jpg")
                    if not os.path.isfile(src):
                        missing.append(src)
                    elif not os.path.exists(dst):
                        (shutil.copy2 if args.copy else os.symlink)(os.path.abspath(src), dst)
                    if not os.path.isfile(os.path.join(target, ANNOTATIONS, f"{image_id}.json")):
                        missing.append(os.path.join(target, ANNOTATIONS, f"{image_id}.json"))
    for supercategory in PASCAL_PART_SUPERCATEGORIES:
        classes = pascal_part_classes(index, supercategory)
        print(f"{supercategory}: {len(classes)} part classes")
    if missing:
        sys.exit(f"{len(set(missing))} files missing, e.g. {sorted(set(missing))[:3]}")
    print(f"PASCAL-Part ready at {target}")


if __name__ == "__main__":
    main()
