#!/usr/bin/env python
"""Split a SAM-annotated Objects365 JSON into SINE's layout (datasets/README.md#objects365-sam).

Input: a COCO-format instances JSON whose annotations carry their SAM mask in ``segmentation``
(compressed/uncompressed RLE or polygons), e.g. SAM prompted with every Objects365 box.

Output under ``$DETECTRON2_DATASETS/objects365`` (default ``datasets/objects365``):

    annotations/objects365_sam_<split>.json   the same JSON without segmentations
    sam_masks/<split>/<file_name stem>.json   {"image_id", "height", "width",
                                               "annotations": [{"id", "segmentation"}, ...]}

Annotations without a mask are dropped from both. Image ``file_name``s are made relative to
``objects365/<split>`` (``images/v1/patch8/x.jpg`` -> ``patch8/x.jpg``), matching how the Objects365
v2 archives extract.

Usage:
    python datasets/prepare_objects365_sam.py --input sam_objects365_train.json --split train
"""
import argparse
import json
import os
from collections import defaultdict

import tqdm


def normalize_file_name(file_name):
    """Path of an image relative to ``objects365/<split>``: from the ``patch*`` folder on."""
    parts = file_name.replace("\\", "/").split("/")
    for i, part in enumerate(parts):
        if part.startswith("patch"):
            return "/".join(parts[i:])
    return file_name


def mask_file(mask_root, file_name):
    # Must match sine.data.datasets.register_objects365_sam.sam_mask_file.
    return os.path.join(mask_root, os.path.splitext(file_name)[0] + ".json")


def write_mask_files(images, masks_by_image, mask_root):
    made = set()
    for image in tqdm.tqdm(images, desc="mask files"):
        path = mask_file(mask_root, image["file_name"])
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        content = {
            "image_id": image["id"],
            "height": image["height"],
            "width": image["width"],
            "annotations": masks_by_image.get(image["id"], []),
        }
        with open(path, "w") as f:
            json.dump(content, f)


def split_masks(data):
    """Move the annotations' ``segmentation`` out of ``data`` (in place); return them by image."""
    masks_by_image = defaultdict(list)
    kept = []
    for anno in data["annotations"]:
        segm = anno.pop("segmentation", None)
        if not segm:
            continue
        masks_by_image[anno["image_id"]].append({"id": anno["id"], "segmentation": segm})
        kept.append(anno)
    dropped = len(data["annotations"]) - len(kept)
    data["annotations"] = kept
    return masks_by_image, dropped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="COCO-format JSON with SAM masks")
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"), help="datasets root"
    )
    args = parser.parse_args(argv)

    with open(args.input) as f:
        data = json.load(f)
    for image in data["images"]:
        image["file_name"] = normalize_file_name(image["file_name"])
    masks_by_image, dropped = split_masks(data)

    out = os.path.join(os.path.expanduser(args.root), "objects365")
    write_mask_files(data["images"], masks_by_image, os.path.join(out, "sam_masks", args.split))
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    json_out = os.path.join(out, "annotations", f"objects365_sam_{args.split}.json")
    with open(json_out, "w") as f:
        json.dump(data, f)
    print(f"{len(data['images'])} images, {len(data['annotations'])} annotations -> {json_out}")
    if dropped:
        print(f"dropped {dropped} annotations without a mask")


if __name__ == "__main__":
    main()
