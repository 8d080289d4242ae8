#!/usr/bin/env python
"""Install ``panopticapi`` (COCO's PQ evaluation, used by detectron2's COCOPanopticEvaluator).

``panopticapi`` is not published on the package registry under its own name. Order of
preference:
1. ``panopticapi.evaluation.pq_compute`` is already importable -> nothing to do.
2. The official source (github.com/cocodataset/panopticapi) is reachable -> ``pip install`` it.
3. Otherwise the registry distribution ``panopticapi-lite==0.2.0``: a pure-Python wheel holding
   the official ``panopticapi`` package unchanged (``evaluation.py``, ``utils.py``, ...). Its
   sha256 is pinned, and ``tests/test_panoptic_quality.py`` checks that its PQ equals the PQ
   worked out by hand on small cases. It is installed with ``--no-deps``: its metadata lists
   matplotlib and scikit-image, which ``pq_compute`` never imports (it needs numpy and Pillow,
   both already required by sine). Nothing is compiled.

Usage: ``python tools/install_panopticapi.py [--force] [--no-official]``
"""
import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile

OFFICIAL_SOURCE = "git+https://github.com/cocodataset/panopticapi.git"
REGISTRY_PACKAGE = "panopticapi-lite==0.2.0"
REGISTRY_WHEEL = "panopticapi_lite-0.2.0-py3-none-any.whl"
REGISTRY_SHA256 = "58d3ffa842a72240162e7fa744c602a0a5320baabbdb3295d770374f4639b486"


def _pip(*args):
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def panopticapi_importable():
    code = "from panopticapi.evaluation import pq_compute; from panopticapi.utils import id2rgb"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def github_reachable(timeout=3.0):
    try:
        with socket.create_connection(("github.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


def install_from_registry():
    with tempfile.TemporaryDirectory() as tmp:
        _pip("download", "--no-deps", "--only-binary=:all:", "-d", tmp, REGISTRY_PACKAGE)
        wheel = os.path.join(tmp, REGISTRY_WHEEL)
        with open(wheel, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        if sha != REGISTRY_SHA256:
            sys.exit(f"sha256 mismatch for {REGISTRY_WHEEL}: got {sha}, expected "
                     f"{REGISTRY_SHA256}; refusing to install an unverified panopticapi")
        _pip("install", "--no-deps", wheel)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if importable")
    parser.add_argument("--no-official", action="store_true", help="skip the GitHub source")
    args = parser.parse_args()
    if not args.force and panopticapi_importable():
        print("panopticapi already installed")
        return
    if not args.no_official and github_reachable():
        try:
            _pip("install", OFFICIAL_SOURCE)
        except subprocess.CalledProcessError:
            print("official source failed to install; falling back to", REGISTRY_PACKAGE)
            install_from_registry()
    else:
        print("github.com is not reachable: installing the registry wheel", REGISTRY_PACKAGE)
        install_from_registry()
    if not panopticapi_importable():
        sys.exit("panopticapi was installed but cannot be imported; see the messages above")
    print("panopticapi ready")


if __name__ == "__main__":
    main()
