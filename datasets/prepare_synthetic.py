#!/usr/bin/env python
"""Generate the built-in synthetic dataset into ``<root>/synthetic`` (see datasets/synthetic.md).

Usage: ``python datasets/prepare_synthetic.py [--root datasets] [--seed 0] [--force] [--parts]``
The root defaults to $DETECTRON2_DATASETS, else ``datasets``. The same seed and sizes always give
byte-identical files; an existing complete tree with the same parameters is left untouched.
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="datasets root; the tree is written to <root>/synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--num-videos", type=int, default=6)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--fewshot-seeds", type=int, default=3)
    parser.add_argument("--force", action="store_true", help="regenerate an existing tree")
    parser.add_argument("--parts", action="store_true",
                        help="also write <root>/synthetic_parts (part segmentation)")
    parser.add_argument("--num-part-train", type=int, default=300)
    parser.add_argument("--num-part-val", type=int, default=60)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from sine.data.synthetic import generate_synthetic  # after parsing: `--help` answers at once

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    path = generate_synthetic(
        args.root, args.seed, num_train=args.num_train, num_val=args.num_val,
        num_videos=args.num_videos, shots=args.shots, fewshot_seeds=args.fewshot_seeds,
        force=args.force, progress=True,
    )
    logging.info("Synthetic dataset ready at %s (%.1f s)", path, time.perf_counter() - start)
    if args.parts:
        from sine.data.synthetic.parts import generate_synthetic_parts

        path = generate_synthetic_parts(args.root, args.seed, num_train=args.num_part_train,
                                        num_val=args.num_part_val, force=args.force,
                                        progress=True)
        logging.info("Synthetic parts ready at %s", path)


if __name__ == "__main__":
    main()
