"""sine: SINE in-context segmentation as a detectron2 extension.

``import sine`` is light (no torch, no detectron2): the public names below are imported on first
use, so every command's ``--help`` answers at once. sine's backbones, meta-architectures and
datasets are registered with detectron2 when ``sine.data`` / ``sine.modeling`` are imported,
which building any sine config does (``sine.config.add_sine_config``, ``add_segic_config``,
``get_default_cfg``, ``get_sine_cfg``). Code that uses detectron2's registries or
``DatasetCatalog`` without building a sine config calls :func:`register_all` first.
"""
import importlib

__all__ = ["add_sine_config", "InContextPredictor", "SinePredictor", "VideoPredictor",
           "register_all"]

# public name -> module defining it, imported on first access (PEP 562)
_LAZY = {
    "add_sine_config": "sine.config",
    "InContextPredictor": "sine.engine.predictor",
    "SinePredictor": "sine.engine.predictor",
    "VideoPredictor": "sine.engine.video_predictor",
}


def register_all() -> None:
    """Register sine with detectron2: backbones, meta-architectures, transformer decoders
    (``sine.modeling``) and datasets (``sine.data``). Idempotent; every sine config calls it."""
    importlib.import_module("sine.data")
    importlib.import_module("sine.modeling")


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):  # `sine.data`, `sine.modeling`, ... as before: import on use
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
