#!/usr/bin/env python
"""Install detectron2 without compiling anything.

Order of preference:
1. detectron2 is already importable -> nothing to do.
2. The official source (github.com/facebookresearch/detectron2) is reachable -> ``pip install`` it.
3. Otherwise, the registry package ``sal-detectron2==0.7.2``: a repackaged detectron2 0.7 wheel
   built for CPython 3.10. Its Python code runs on newer Pythons; only the compiled ops
   (``detectron2/_C*.so``) are tied to 3.10, and this project does not use them. We download the
   wheel, check its pinned sha256, drop the ``.so``, retag it ``py3-none-any``, remove the
   ``numpy<2`` pin from its metadata (detectron2's Python code runs on numpy 2; the pin would
   make pip downgrade numpy) and pip-install it. An install of the registry package that still
   carries the pin is replaced the same way.

Usage: ``python tools/install_detectron2.py [--force] [--no-official]``
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

OFFICIAL_SOURCE = "git+https://github.com/facebookresearch/detectron2.git"
REGISTRY_PACKAGE = "sal-detectron2==0.7.2"
REGISTRY_WHEEL = "sal_detectron2-0.7.2-cp310-none-any.whl"
REGISTRY_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
# Runtime needs of detectron2 that the repackaged wheel's metadata leaves out.
EXTRA_RUNTIME_DEPS = ["fvcore>=0.1.5", "iopath>=0.1.7", "pycocotools>=2.0.2"]
REGISTRY_DIST = "sal-detectron2"
# Requirements of the registry wheel's metadata rewritten on retagging: old -> new.
METADATA_FIXES = {"Requires-Dist: numpy<2": "Requires-Dist: numpy"}


def detectron2_importable():
    return importable("import detectron2.config, detectron2.modeling")


def registry_install_pins_numpy_below_2():
    """True if the installed registry package still declares ``numpy<2`` (an older install)."""
    code = ("import sys; from importlib.metadata import requires, PackageNotFoundError\n"
            "try: reqs = requires(%r) or []\n"
            "except PackageNotFoundError: reqs = []\n"
            "sys.exit(int(any(r.replace(' ', '') == 'numpy<2' for r in reqs)))" % REGISTRY_DIST)
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 1


def retag_pure_python(src, dst_dir):
    """Rewrite ``src`` as a ``py3-none-any`` wheel without compiled extensions; return its path."""
    name, version = os.path.basename(src).split("-")[:2]

    def rewrite(filename, data):
        if filename.startswith("detectron2/_C") and os.path.basename(filename).endswith(".so"):
            return None
        if filename.endswith(".dist-info/METADATA"):
            lines = [METADATA_FIXES.get(ln, ln) for ln in data.decode().splitlines()]
            return ("\n".join(lines) + "\n").encode()
        if filename.endswith(".dist-info/WHEEL"):
            lines = data.decode().splitlines()
            lines = [ln for ln in lines if not ln.startswith(("Tag:", "Root-Is-Purelib:"))]
            lines += ["Root-Is-Purelib: true", "Tag: py3-none-any"]
            return ("\n".join(lines) + "\n").encode()
        return data

    return rewrite_wheel(src, os.path.join(dst_dir, f"{name}-{version}-py3-none-any.whl"), rewrite)


def install_from_registry():
    with tempfile.TemporaryDirectory() as tmp:
        src = download_verified(REGISTRY_PACKAGE, REGISTRY_WHEEL, REGISTRY_SHA256, tmp,
                                "--python-version", "3.10")
        wheel = retag_pure_python(src, tmp)
        # Replaces an install of the same version (e.g. one still pinning numpy<2) ...
        pip("install", "--force-reinstall", "--no-deps", wheel)
        # ... then its dependencies, as the rewritten metadata lists them.
        pip("install", wheel, *EXTRA_RUNTIME_DEPS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if importable")
    parser.add_argument("--no-official", action="store_true", help="skip the GitHub source")
    args = parser.parse_args()
    repair = registry_install_pins_numpy_below_2()
    if not args.force and not repair and detectron2_importable():
        print("detectron2 already installed")
        return
    if repair:
        print(f"{REGISTRY_DIST} is installed with a numpy<2 pin: reinstalling it without")
        install_from_registry()
    elif not args.no_official and github_reachable():
        try:
            pip("install", "--no-build-isolation", OFFICIAL_SOURCE, *EXTRA_RUNTIME_DEPS)
        except subprocess.CalledProcessError:
            print("official source failed to install; falling back to the registry wheel")
            install_from_registry()
    else:
        print("github.com is not reachable: installing the registry wheel", REGISTRY_PACKAGE)
        install_from_registry()
    if not detectron2_importable():
        sys.exit("detectron2 was installed but cannot be imported; see the messages above")
    print("detectron2 ready")


if __name__ == "__main__":
    main()
