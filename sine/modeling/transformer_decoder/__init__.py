"""SINE transformer decoder: In-Context Fusion + M-Former (registers ``MFormerDecoder``)."""
from .in_context_fusion import InContextFusion, MaskPooling
from .m_former import (
    TRANSFORMER_DECODER_REGISTRY,
    MFormerDecoder,
    build_transformer_decoder,
)
from .position_encoding import PositionEmbeddingSine
from .reference_pooling import REFERENCE_POOLING

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "InContextFusion",
    "MFormerDecoder",
    "MaskPooling",
    "PositionEmbeddingSine",
    "REFERENCE_POOLING",
    "build_transformer_decoder",
]
