"""What the no-compile installers (``install_detectron2.py``, ``install_panopticapi.py``) share:
pip calls, import probes, a pinned registry download and a wheel rewrite that keeps RECORD valid.
"""
import base64
import hashlib
import os
import socket
import subprocess
import sys
import zipfile
from typing import Callable, Optional

__all__ = ["download_verified", "github_reachable", "importable", "pip", "rewrite_wheel"]


def pip(*args):
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def importable(code: str) -> bool:
    """True if ``code`` (imports) runs in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def github_reachable(timeout=3.0) -> bool:
    try:
        with socket.create_connection(("github.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


def download_verified(package: str, wheel: str, sha256: str, dst_dir: str, *pip_args) -> str:
    """``pip download`` ``package`` into ``dst_dir``; exits unless ``wheel`` has ``sha256``."""
    pip("download", "--no-deps", "--only-binary=:all:", *pip_args, "-d", dst_dir, package)
    path = os.path.join(dst_dir, wheel)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    if sha != sha256:
        sys.exit(f"sha256 mismatch for {wheel}: got {sha}, expected {sha256}; refusing to "
                 "install an unverified wheel")
    return path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def rewrite_wheel(src: str, dst: str, rewrite: Callable[[str, bytes], Optional[bytes]]) -> str:
    """Copy wheel ``src`` to ``dst``, every member through ``rewrite(name, data)`` (None drops
    it), with a RECORD of the new hashes and sizes; returns ``dst``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name, records = None, []
        for info in zin.infolist():
            if info.filename.endswith(".dist-info/RECORD"):
                record_name = info.filename
                continue
            data = rewrite(info.filename, zin.read(info.filename))
            if data is None:
                continue
            zout.writestr(info.filename, data)
            records.append(f"{info.filename},{_record_hash(data)},{len(data)}")
        records.append(f"{record_name},,")
        zout.writestr(record_name, "\n".join(records) + "\n")
    return dst
