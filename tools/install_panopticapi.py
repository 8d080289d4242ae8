#!/usr/bin/env python
"""Install ``panopticapi`` (COCO's PQ evaluation, used by detectron2's COCOPanopticEvaluator).

``panopticapi`` is not published on the package registry under its own name. Order of
preference:
1. ``panopticapi.evaluation.pq_compute`` is already importable -> nothing to do.
2. The official source (github.com/cocodataset/panopticapi) is reachable -> ``pip install`` it.
3. Otherwise the registry distribution ``panopticapi-lite==0.2.0``: a pure-Python wheel holding
   the official ``panopticapi`` package unchanged (``evaluation.py``, ``utils.py``, ...). Its
   sha256 is pinned, and ``tests/test_panoptic_quality.py`` checks that its PQ equals the PQ
   worked out by hand on small cases. Its metadata lists matplotlib, scikit-image and
   ``numpy<2``, none of which ``panopticapi`` needs (it imports numpy and Pillow only, and runs on
   numpy 2): the wheel's requirements are rewritten to ``numpy`` and ``Pillow`` before it is
   installed, so pip neither pulls the others nor downgrades numpy, and ``pip check`` stays
   clean. An earlier install that still carries the old requirements is replaced. Nothing is
   compiled.

Usage: ``python tools/install_panopticapi.py [--force] [--no-official]``
"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when loaded by path
from wheel_tools import (  # noqa: E402
    download_verified,
    github_reachable,
    importable,
    pip,
    rewrite_wheel,
)

OFFICIAL_SOURCE = "git+https://github.com/cocodataset/panopticapi.git"
REGISTRY_PACKAGE = "panopticapi-lite==0.2.0"
REGISTRY_WHEEL = "panopticapi_lite-0.2.0-py3-none-any.whl"
REGISTRY_SHA256 = "58d3ffa842a72240162e7fa744c602a0a5320baabbdb3295d770374f4639b486"
REGISTRY_DIST = "panopticapi-lite"
# What panopticapi's modules import (evaluation, utils, combine_semantic_and_instance_...).
REQUIREMENTS = ["Requires-Dist: numpy", "Requires-Dist: Pillow"]


def panopticapi_importable():
    return importable("from panopticapi.evaluation import pq_compute; "
                      "from panopticapi.utils import id2rgb")


def registry_install_has_foreign_requirements():
    """True if an installed registry wheel still declares its original requirements."""
    code = ("import importlib.metadata as m, sys\n"
            "try: reqs = m.requires(%r) or []\n"
            "except m.PackageNotFoundError: sys.exit(0)\n"
            "sys.exit(int(any('scikit-image' in r or 'numpy<' in r.replace(' ', '') "
            "for r in reqs)))" % REGISTRY_DIST)
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 1


def rewrite_requirements(src, dst_dir):
    """Copy wheel ``src`` to ``dst_dir`` with its ``Requires-Dist`` lines replaced by
    :data:`REQUIREMENTS` (and RECORD hashes updated); returns the new wheel's path."""

    def rewrite(filename, data):
        if not filename.endswith(".dist-info/METADATA"):
            return data
        lines = data.decode().split("\n")
        header_end = lines.index("") if "" in lines else len(lines)
        header = [ln for ln in lines[:header_end] if not ln.startswith("Requires-Dist:")]
        return "\n".join(header + REQUIREMENTS + lines[header_end:]).encode()

    return rewrite_wheel(src, os.path.join(dst_dir, os.path.basename(src)), rewrite)


def install_from_registry():
    with tempfile.TemporaryDirectory() as tmp:
        wheel = download_verified(REGISTRY_PACKAGE, REGISTRY_WHEEL, REGISTRY_SHA256, tmp)
        out = os.path.join(tmp, "rewritten")
        os.makedirs(out)
        pip("install", "--force-reinstall", "--no-deps", rewrite_requirements(wheel, out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if importable")
    parser.add_argument("--no-official", action="store_true", help="skip the GitHub source")
    args = parser.parse_args()
    if registry_install_has_foreign_requirements():
        print(f"{REGISTRY_DIST} is installed with requirements it does not need (numpy<2, ...): "
              "reinstalling it without them")
        install_from_registry()
    elif not args.force and panopticapi_importable():
        print("panopticapi already installed")
        return
    elif not args.no_official and github_reachable():
        try:
            pip("install", OFFICIAL_SOURCE)
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
