"""Meta-architectures of sine (registers ``SINE`` and ``SegIC`` in detectron2's
META_ARCH_REGISTRY)."""
from .segic_model import SegIC, SegICReferenceTokens
from .sine_model import SINE, SINEInputs

__all__ = ["SINE", "SINEInputs", "SegIC", "SegICReferenceTokens"]
