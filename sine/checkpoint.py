"""Loading official SINE weights: key checks and a strict detectron2 checkpointer (spec §8).

Official checkpoints (``pytorch_model.bin`` from DeepSpeed's zero_to_fp32, or a
``model.state_dict()``) are flat dicts whose keys equal the keys of :class:`sine.modeling.SINE`,
so no renaming is needed. They may lack the frozen DINOv2 weights
(``image_encoder.encoder.*``); those then come from ``MODEL.DINOV2.WEIGHTS``.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

logger = logging.getLogger(__name__)

ENCODER_PREFIX = "image_encoder.encoder."

__all__ = ["ENCODER_PREFIX", "KeyReport", "SINECheckpointer", "compare_state_dict",
           "read_official_state_dict"]


@dataclass
class KeyReport:
    """How a state dict fits a model's ``state_dict()``."""

    matched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    bad_shapes: List[str] = field(default_factory=list)
    # Encoder keys absent from the checkpoint but provided by MODEL.DINOV2.WEIGHTS.
    encoder_from_weights: List[str] = field(default_factory=list)
    encoder_weights: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.bad_shapes)

    def format(self) -> str:
        lines = [f"matched keys: {len(self.matched)}"]
        if self.encoder_from_weights:
            lines.append(
                f"DINOv2 keys not in the checkpoint: {len(self.encoder_from_weights)}, taken from "
                f"MODEL.DINOV2.WEIGHTS={self.encoder_weights}"
            )
        encoder_missing = [k for k in self.missing if k.startswith(ENCODER_PREFIX)]
        if encoder_missing:
            lines.append(f"missing DINOv2 keys: {len(encoder_missing)} ({ENCODER_PREFIX}*)")
        other_missing = [k for k in self.missing if not k.startswith(ENCODER_PREFIX)]
        for name, keys in (("missing", other_missing), ("unexpected", self.unexpected),
                           ("shape mismatches", self.bad_shapes)):
            if keys:
                lines.append(f"{name} ({len(keys)}):\n  " + "\n  ".join(keys))
        if encoder_missing and not other_missing:
            lines.append(
                "Only DINOv2 keys are missing: set MODEL.DINOV2.WEIGHTS to the official DINOv2 "
                "checkpoint (e.g. dinov2_vitl14_pretrain.pth)."
            )
        return "\n".join(lines)


def read_official_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Flat state dict from an official SINE file (flat, {"model": ...} or {"module": ...})."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "module", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(torch.is_tensor(v) for v in data.values()):
        raise ValueError(
            f"{path} is not a SINE state dict: expected a flat dict of tensors with keys "
            "image_encoder.*, transformer_decoder.*, criterion.empty_weight (official "
            "pytorch_model.bin / model.state_dict())."
        )
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in data.items()}


def compare_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> KeyReport:
    """Compare ``state_dict`` with ``model.state_dict()`` (persistent entries only).

    Encoder keys absent from ``state_dict`` count as provided (not missing) when the model's
    encoder was loaded from MODEL.DINOV2.WEIGHTS and the checkpoint has no encoder key at all.
    """
    expected = model.state_dict()
    report = KeyReport()
    weights = getattr(getattr(model, "image_encoder", None), "encoder_weights", "")
    has_encoder = any(k.startswith(ENCODER_PREFIX) for k in state_dict)
    for k, v in expected.items():
        if k in state_dict:
            if tuple(state_dict[k].shape) == tuple(v.shape):
                report.matched.append(k)
            else:
                report.bad_shapes.append(
                    f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                )
        elif weights and not has_encoder and k.startswith(ENCODER_PREFIX):
            report.encoder_from_weights.append(k)
        else:
            report.missing.append(k)
    report.unexpected = sorted(set(state_dict) - set(expected))
    report.encoder_weights = weights
    return report


class SINECheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that raises ValueError when checkpoint keys don't fit.

    Plain ``DetectionCheckpointer`` also loads official files (missing DINOv2 keys are filled
    from MODEL.DINOV2.WEIGHTS by the encoder), but only logs mismatches; this one refuses them,
    which is what evaluation wants. ``strict=False`` gives the detectron2 behaviour.
    """

    def __init__(self, model, save_dir="", *, strict: bool = True, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.strict = strict

    def _load_model(self, checkpoint):
        if self.strict:
            state_dict = checkpoint["model"]
            if not checkpoint.get("matching_heuristics", False):
                model = getattr(self.model, "module", self.model)
                state_dict = {k[7:] if k.startswith("module.") else k: v
                              for k, v in state_dict.items()}
                report = compare_state_dict(model, state_dict)
                if not report.ok:
                    raise ValueError("Checkpoint keys do not fit the model:\n" + report.format())
        return super()._load_model(checkpoint)
