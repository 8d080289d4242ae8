#!/usr/bin/env python
"""Peak memory and time of one very large target: the API (``InContextPredictor.predict``) against
the command line (demo/demo.py: predict + draw + save), each in a fresh process.

    python benchmarks/bench_large_image.py [--side 9000]

Uses the CPU demo model (configs/demo/sine_synthetic_tiny.yaml) with random weights: the
memory of a large target is dominated by full-resolution masks and drawing, not by the model.
The CLI draws at most ``--vis-max-side`` (1600) pixels per side and saves full-size masks;
the bound to hold is CLI peak <= 1.5 x API peak.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    ROOT,
    markdown_table,
    peak_rss_mib,
    print_machine,
    rss_mib,
    run_child,
)

CONFIG = os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml")


def make_inputs(folder: str, side: int):
    """A 320x240 reference with two objects and a side x side JPEG target of smooth blobs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ref = np.full((240, 320, 3), 200, np.uint8)
    ref[40:120, 40:160], ref[140:220, 180:300] = (220, 40, 30), (30, 70, 220)
    labels = np.zeros((240, 320), np.uint8)
    labels[40:120, 40:160], labels[140:220, 180:300] = 1, 2
    Image.fromarray(ref).save(os.path.join(folder, "ref.png"))
    Image.fromarray(labels).save(os.path.join(folder, "labels.png"))
    small = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(small).resize((side, side), Image.BILINEAR).save(
        os.path.join(folder, "target.jpg"), quality=90)


def child(mode: str, folder: str) -> dict:
    before = rss_mib()
    start = time.perf_counter()
    if mode == "api":
        from sine.engine.predictor import InContextPredictor

        p = InContextPredictor.from_config_file(CONFIG)
        p.set_reference(os.path.join(folder, "ref.png"), os.path.join(folder, "labels.png"))
        result = p.predict(os.path.join(folder, "target.jpg"))
        n = len(result["instances"])
    else:
        sys.path.insert(0, ROOT)
        from demo.demo import main

        summary = main(["--ref-image", os.path.join(folder, "ref.png"), "--ref-mask",
                        os.path.join(folder, "labels.png"), "--input",
                        os.path.join(folder, "target.jpg"), "--output",
                        os.path.join(folder, "out")])
        n = len(summary.written)
    return {"mode": mode, "seconds": time.perf_counter() - start, "peak_mib": peak_rss_mib(),
            "start_mib": before, "n": n}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=9000)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print_machine("cpu")
    with tempfile.TemporaryDirectory() as folder:
        make_inputs(folder, args.side)
        rows, peaks = [], {}
        for mode in ("api", "cli"):
            r = run_child(os.path.abspath(__file__), [mode, folder])
            peaks[mode] = r["peak_mib"]
            rows.append([mode, f"{args.side}x{args.side}", f"{r['seconds']:.1f}",
                         f"{r['peak_mib']:.0f}"])
    print(markdown_table(["entry point", "target", "time (s)", "peak RSS (MiB)"], rows))
    ratio = peaks["cli"] / peaks["api"]
    print(f"CLI / API peak memory: {ratio:.2f} (bound: 1.5)")


if __name__ == "__main__":
    main()
