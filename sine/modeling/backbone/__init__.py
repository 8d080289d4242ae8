"""Backbones of sine (registers ``DINOv2Encoder`` in detectron2's BACKBONE_REGISTRY).

The encoder's ViT is chosen by ``MODEL.DINOV2.VIT`` (:mod:`.vit_builder`): the hand-written
DINOv2, or DINOv2 / DINOv3 / CLIP on timm's modules (:mod:`.timm_vit`).
"""
from .dinov2 import DinoVisionTransformer, build_dinov2_vit, load_dinov2_checkpoint
from .dinov2_encoder import DINOv2Encoder, build_dinov2_encoder
from .timm_vit import TimmDINOv3, TimmViT
from .vit_builder import VIT_BUILDERS, build_vit, load_vit_checkpoint, register_vit

__all__ = [
    "DINOv2Encoder",
    "DinoVisionTransformer",
    "TimmDINOv3",
    "TimmViT",
    "VIT_BUILDERS",
    "build_dinov2_encoder",
    "build_dinov2_vit",
    "build_vit",
    "load_dinov2_checkpoint",
    "load_vit_checkpoint",
    "register_vit",
]
