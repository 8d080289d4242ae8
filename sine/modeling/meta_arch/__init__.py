"""Meta-architectures of sine (registers ``SINE`` in detectron2's META_ARCH_REGISTRY)."""
from .sine_model import SINE, SINEInputs

__all__ = ["SINE", "SINEInputs"]
