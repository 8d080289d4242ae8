"""sine: SINE in-context segmentation as a detectron2 extension.

Importing the package registers its config, backbone, meta-architecture and datasets.
"""
from . import (
    data,  # noqa: F401  (registers datasets)
    modeling,  # noqa: F401  (registers backbone and meta-architecture)
)
from .config import add_sine_config
from .engine.predictor import InContextPredictor, SinePredictor
from .engine.video_predictor import VideoPredictor

__all__ = ["add_sine_config", "InContextPredictor", "SinePredictor", "VideoPredictor"]
