#!/usr/bin/env python
"""Throughput of ``python -m sine.label`` on the synthetic dataset.

    python benchmarks/bench_label.py [--num-images 38] [MODEL.WEIGHTS output/demo/model_final.pth]

Renders a small synthetic tree (sine.data.synthetic) in a temporary folder, takes its first two
annotated val images as references (K = 2 shots, every category on them) and labels the other
val images with the CPU demo model (configs/demo/sine_synthetic_tiny.yaml). Speed does not
depend on the weights; without MODEL.WEIGHTS they are random.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, print_machine  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=38, help="images to label")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args()
    print_machine("cpu")
    from sine.data.synthetic import generate_synthetic
    from sine.label import main as label_main

    with tempfile.TemporaryDirectory() as tmp:
        generate_synthetic(tmp, seed=0, num_train=4, num_val=args.num_images + 2,
                           num_videos=1, shots=(1,))
        root = os.path.join(tmp, "synthetic")
        with open(os.path.join(root, "annotations", "instances_val.json")) as f:
            val = json.load(f)
        images = sorted(val["images"], key=lambda i: i["id"])
        refs = {i["id"] for i in images[:2]}
        ref_file = os.path.join(tmp, "refs.json")
        with open(ref_file, "w") as f:
            json.dump({**val, "images": images[:2],
                       "annotations": [a for a in val["annotations"] if a["image_id"] in refs]},
                      f)
        with open(os.path.join(tmp, "targets.txt"), "w") as f:
            f.write("\n".join(os.path.join(root, "val", i["file_name"]) for i in images[2:]))
        start = time.perf_counter()
        summary = label_main([
            "--config-file", os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml"),
            "--ref-coco", ref_file, "--ref-image-root", os.path.join(root, "val"),
            "--images", os.path.join(tmp, "targets.txt"),
            "--output", os.path.join(tmp, "labels.json"), *args.opts])
        total = time.perf_counter() - start
    print(f"labelled {summary['labelled']} synthetic images (about 220x220) from 2 references: "
          f"{summary['images_per_s']:.2f} images/s in the loop, {total:.1f} s in all "
          "(model build and reference encoding included)")


if __name__ == "__main__":
    main()
