#!/usr/bin/env python
"""Install everything sine needs on a fresh machine that has only Python and pip.

Steps (each skipped when already satisfied):
1. ``torch`` + ``torchvision`` from the package registry. A CPU-only torch that torchvision
   cannot load against (torchvision's registry wheels link the CUDA libtorch) is replaced by the
   registry's CUDA build, which runs on CPU as well.
2. ``pip install -e . "numpy>=2"`` (``.[dev,segic]`` with ``--dev``): this package and its
   pure-Python needs (the ``segic`` extra brings segment-anything, transformers and
   open-clip-torch for SegIC).
3. detectron2, through ``tools/install_detectron2.py`` (official source or the repackaged
   registry wheel; nothing is compiled; its ``numpy<2`` metadata pin removed), ending with
   numpy 2.
4. panopticapi (PQ evaluation), through ``tools/install_panopticapi.py`` (official source or the
   hash-pinned registry wheel ``panopticapi-lite``; pure Python).
5. With ``--dev``: Chromium, Gradio and Playwright for the web-demo browser test
   (``tools/install_browser.sh``); if that cannot be done here, the test says why and skips.

Usage: ``python tools/install_deps.py [--dev]``
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_PINS = ["torch==2.13.0", "torchvision==0.28.0"]
# The package supports numpy >= 1.24 (requirements.txt); a fresh install and CI get numpy 2.
NUMPY = "numpy>=2"


def run(*cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def imports_ok(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def ensure_torch():
    if imports_ok("import torch, torchvision.ops; torchvision.ops.nms"):
        print("torch and torchvision already work")
        return
    if imports_ok("import torch"):
        # A torch that torchvision's compiled ops cannot link against (e.g. a local +cpu wheel).
        run(sys.executable, "-m", "pip", "uninstall", "-y", "torch", "torchvision")
    # --isolated: ignore local find-links that would pick a CPU-only torch again.
    run(sys.executable, "-m", "pip", "install", "--isolated", *TORCH_PINS, NUMPY)
    if not imports_ok("import torch, torchvision.ops; torchvision.ops.nms"):
        sys.exit("torch/torchvision installed but cannot be imported together")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true",
                        help="also install test/lint tools and the SegIC extra")
    args = parser.parse_args()
    ensure_torch()
    target = ".[dev,segic]" if args.dev else "."
    run(sys.executable, "-m", "pip", "install", "-q", "-e", target, NUMPY)
    # After numpy: its wheel is installed without the numpy<2 pin of the registry package's
    # metadata (an older install with that pin is replaced), so nothing downgrades numpy.
    run(sys.executable, os.path.join(ROOT, "tools", "install_detectron2.py"))
    if not imports_ok("import numpy, sys; sys.exit(int(numpy.__version__.split('.')[0]) < 2)"):
        sys.exit("numpy is older than 2 after the install; see the pip messages above")
    run(sys.executable, os.path.join(ROOT, "tools", "install_panopticapi.py"))
    if args.dev:
        browser = subprocess.run(["bash", os.path.join(ROOT, "tools", "install_browser.sh")],
                                 env=dict(os.environ, PYTHON=sys.executable))
        if browser.returncode != 0:
            print("warning: the browser test's dependencies could not be installed; "
                  "tests/test_web_demo.py will skip and print why")


if __name__ == "__main__":
    main()
