"""Resuming the evaluation suites: the one mechanism shared by FSS, FSOD and VOS.

A run is split into units of work (an FSS fold, an FSOD seed, a VOS video). When a unit
finishes, its record (a JSON file) is written atomically together with the settings that
produced it; partial progress inside a unit (e.g. an FSS fold's episodes) is a record too. A
rerun reads the records back: a unit whose record exists with the same settings is skipped.
A record written with other settings (other weights, model config, protocol options) is never
reused: it is an error (``on_mismatch="error"``, naming the differences) or the unit is
recomputed (``on_mismatch="redo"``).
"""
import hashlib
import json
import logging
import os
from typing import Dict, Optional

from ..utils.io import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["RunRecords", "file_identity", "model_identity"]


def file_identity(path: str):
    """What identifies a weights file cheaply: its real path, size and modification time."""
    if not path:
        return ""
    if not os.path.isfile(path):
        return path  # e.g. a URL handled by the checkpointer
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(cfg) -> Dict:
    """Settings that identify the model of ``cfg``: weights files and a hash of ``cfg.MODEL``
    (MODEL.DEVICE excluded: the same results on any device)."""
    model_cfg = cfg.MODEL.clone()
    model_cfg.defrost()
    model_cfg.DEVICE = ""
    return {
        "weights": file_identity(cfg.MODEL.WEIGHTS),
        "dinov2_weights": file_identity(cfg.MODEL.get("DINOV2", {}).get("WEIGHTS", "")),
        "model_config_sha1": hashlib.sha1(model_cfg.dump().encode()).hexdigest(),
    }


def _jsonable(value):
    return json.loads(json.dumps(value))


class RunRecords:
    """Records of the finished (or partly finished) units of one run, all tied to its settings.

    A record is ``{"settings": settings, **payload}`` in a JSON file.
    """

    def __init__(self, settings: Dict, on_mismatch: str = "error"):
        """
        Args:
            settings: JSON-able dict of everything the results depend on.
            on_mismatch: "error" (raise naming the changed settings) or "redo" (log and
                treat the unit as not done) for a record written with other settings.
        """
        if on_mismatch not in ("error", "redo"):
            raise ValueError(f"on_mismatch must be 'error' or 'redo', got {on_mismatch!r}")
        self.settings = _jsonable(settings)
        self.on_mismatch = on_mismatch

    def load(self, path: str) -> Optional[Dict]:
        """The record at ``path`` (payload and "settings"), or None if the unit must be run."""
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            record = json.load(f)
        saved = record.get("settings", {})
        diff = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
        if not diff:
            return record
        changes = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
        if self.on_mismatch == "error":
            raise ValueError(
                f"{path} was written by a run with other settings ({changes}); use another "
                "output folder or delete that file to start over"
            )
        logger.warning("%s was written with other settings (%s); recomputing", path, changes)
        return None

    def save(self, path: str, payload: Dict, compact: bool = False) -> None:
        """Write ``payload`` with the settings atomically (nothing half written on a kill).

        ``compact``: no indentation (long per-episode records).
        """
        if "settings" in payload:
            raise ValueError("'settings' is reserved in a record's payload")
        with atomic_write(path) as f:
            json.dump({"settings": self.settings, **payload}, f,
                      indent=None if compact else 2)
