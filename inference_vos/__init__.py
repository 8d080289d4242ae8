"""Video object segmentation benchmarks (spec §7.3): DAVIS 2016/2017 and YouTube-VOS 2018.

Run with ``inference_vos/run_vos.py`` (see inference_vos/README.md); the tracker itself is
``sine.engine.video_predictor.VideoPredictor``.
"""
from .results import VideoOutput, VOSResultWriter
from .video_reader import DAVISReader, VOSVideo, YouTubeVOSReader, read_label_map

__all__ = ["DAVISReader", "VOSResultWriter", "VOSVideo", "VideoOutput", "YouTubeVOSReader",
           "read_label_map"]
