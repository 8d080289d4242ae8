"""Meta-architectures of sine (registers ``SINE``, ``SegIC`` and ``SINETransfer`` in
detectron2's META_ARCH_REGISTRY)."""
from .segic_model import SegIC, SegICReferenceTokens
from .sine_model import SINE, SINEInputs
from .transfer import SINETransfer

__all__ = ["SINE", "SINEInputs", "SINETransfer", "SegIC", "SegICReferenceTokens"]
