"""Importing this package registers the backbone and the meta-architecture."""
from . import backbone, meta_arch, transformer_decoder  # noqa: F401  (registration)
from .backbone import DINOv2Encoder
from .meta_arch import SINE, SegIC
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY, MFormerDecoder

__all__ = ["DINOv2Encoder", "MFormerDecoder", "SINE", "SegIC", "TRANSFORMER_DECODER_REGISTRY"]
