"""Backbones of sine (registers ``DINOv2Encoder`` in detectron2's BACKBONE_REGISTRY)."""
from .dinov2 import DinoVisionTransformer, build_dinov2_vit, load_dinov2_checkpoint
from .dinov2_encoder import DINOv2Encoder, build_dinov2_encoder

__all__ = [
    "DINOv2Encoder",
    "DinoVisionTransformer",
    "build_dinov2_encoder",
    "build_dinov2_vit",
    "load_dinov2_checkpoint",
]
