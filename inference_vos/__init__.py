"""Video object segmentation benchmarks (spec §7.3): DAVIS 2016/2017 and YouTube-VOS 2018.

Run with ``inference_vos/run_vos.py`` (see inference_vos/README.md); the tracker itself is
``sine.engine.video_predictor.VideoPredictor``. The names below are imported on first use
(``import inference_vos`` is light, so that ``--help`` answers at once).
"""
import importlib

__all__ = ["DAVISReader", "VOSResultWriter", "VOSVideo", "VideoOutput", "YouTubeVOSReader",
           "read_label_map"]

# public name -> submodule defining it (PEP 562)
_LAZY = {"VOSResultWriter": ".results", "VideoOutput": ".results", "DAVISReader": ".video_reader",
         "VOSVideo": ".video_reader", "YouTubeVOSReader": ".video_reader",
         "read_label_map": ".video_reader"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
