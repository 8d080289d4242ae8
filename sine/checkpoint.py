"""Loading official SINE and SegIC weights: key checks and a strict detectron2 checkpointer.

Official checkpoints are flat dicts whose keys equal the model's, so no renaming is needed:

* SINE (spec §8): ``pytorch_model.bin`` from DeepSpeed's zero_to_fp32 or a
  ``model.state_dict()``; it may lack the frozen DINOv2 weights (``image_encoder.encoder.*``),
  which then come from ``MODEL.DINOV2.WEIGHTS``.
* SegIC (SegIC spec §1.2): the trainable weights plus the prompt encoder's PE buffer; the frozen
  towers (``encoder.*`` from ``MODEL.DINOV2.WEIGHTS``, ``text_encoder.*`` from
  ``MODEL.SEGIC.TEXT_ENCODER.WEIGHTS``) are never in it.

A model says which of its key prefixes are frozen towers loaded from their own files with
``frozen_weight_sources()`` (prefix -> file); SINE's is derived from its encoder.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

logger = logging.getLogger(__name__)

ENCODER_PREFIX = "image_encoder.encoder."

__all__ = ["ENCODER_PREFIX", "KeyReport", "SINECheckpointer", "compare_state_dict",
           "frozen_prefixes", "frozen_weight_sources", "read_official_state_dict"]


@dataclass
class KeyReport:
    """How a state dict fits a model's ``state_dict()``."""

    matched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    bad_shapes: List[str] = field(default_factory=list)
    # Frozen-tower keys absent from the checkpoint but provided by their own files.
    encoder_from_weights: List[str] = field(default_factory=list)
    encoder_weights: str = ""
    # Key prefix -> file of every frozen tower (SINE: {ENCODER_PREFIX: MODEL.DINOV2.WEIGHTS}).
    frozen_sources: Dict[str, str] = field(default_factory=dict)
    frozen_prefixes: Tuple[str, ...] = (ENCODER_PREFIX,)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.bad_shapes)

    def format(self) -> str:
        lines = [f"matched keys: {len(self.matched)}"]
        for prefix, source in self.frozen_sources.items():
            provided = [k for k in self.encoder_from_weights if k.startswith(prefix)]
            if provided:
                lines.append(f"frozen keys not in the checkpoint: {len(provided)} ({prefix}*), "
                             f"taken from {source}")
        frozen_missing = [k for k in self.missing if k.startswith(self.frozen_prefixes)]
        for prefix in self.frozen_prefixes:
            count = sum(k.startswith(prefix) for k in frozen_missing)
            if count:
                lines.append(f"missing frozen keys: {count} ({prefix}*)")
        other_missing = [k for k in self.missing if not k.startswith(self.frozen_prefixes)]
        for name, keys in (("missing", other_missing), ("unexpected", self.unexpected),
                           ("shape mismatches", self.bad_shapes)):
            if keys:
                lines.append(f"{name} ({len(keys)}):\n  " + "\n  ".join(keys))
        if frozen_missing and not other_missing:
            lines.append(
                "Only frozen-tower keys are missing: set MODEL.DINOV2.WEIGHTS to the official "
                "DINOv2 checkpoint (e.g. dinov2_vitl14_pretrain.pth) and, for SegIC with text, "
                "MODEL.SEGIC.TEXT_ENCODER.WEIGHTS to the CLIP text directory."
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
            f"{path} is not a SINE or SegIC state dict: expected a flat dict of tensors (SINE: "
            "image_encoder.*, transformer_decoder.*, criterion.empty_weight from the official "
            "pytorch_model.bin / model.state_dict(); SegIC: neck.*, prompt_encoder.*, "
            "mask_decoder.*, inst_type_embed/prompt_proj/inst_proj.*)."
        )
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in data.items()}


def frozen_weight_sources(model: nn.Module) -> Dict[str, str]:
    """Key prefix -> file of the frozen towers ``model`` was built with (loaded at build time)."""
    if hasattr(model, "frozen_weight_sources"):
        return dict(model.frozen_weight_sources())
    weights = getattr(getattr(model, "image_encoder", None), "encoder_weights", "")
    return {ENCODER_PREFIX: weights} if weights else {}


def frozen_prefixes(model: nn.Module) -> Tuple[str, ...]:
    """Key prefixes of the model's frozen towers (whether or not they were loaded)."""
    return tuple(getattr(model, "frozen_prefixes", (ENCODER_PREFIX,)))


def compare_state_dict(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> KeyReport:
    """Compare ``state_dict`` with ``model.state_dict()`` (persistent entries only).

    Keys of a frozen tower absent from ``state_dict`` count as provided (not missing) when the
    tower was loaded from its own file and the checkpoint has no key of that tower at all.
    """
    expected = model.state_dict()
    sources = frozen_weight_sources(model)
    report = KeyReport(frozen_sources=sources, frozen_prefixes=frozen_prefixes(model))
    provided = tuple(p for p in sources if not any(k.startswith(p) for k in state_dict))
    for k, v in expected.items():
        if k in state_dict:
            if tuple(state_dict[k].shape) == tuple(v.shape):
                report.matched.append(k)
            else:
                report.bad_shapes.append(
                    f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                )
        elif provided and k.startswith(provided):
            report.encoder_from_weights.append(k)
        else:
            report.missing.append(k)
    report.unexpected = sorted(set(state_dict) - set(expected))
    report.encoder_weights = sources.get(ENCODER_PREFIX, "")
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
