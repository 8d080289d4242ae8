"""Frozen ViT encoder (DINOv2 by default) + trainable neck, a detectron2 backbone (spec §1)."""
import logging
from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.layers.batch_norm import LayerNorm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from .vit_builder import build_vit, load_vit_checkpoint, unused_vit_parameters

logger = logging.getLogger(__name__)

__all__ = ["DINOv2Encoder", "build_dinov2_encoder", "build_dinov2_vit_from_config", "build_neck"]


def build_neck(in_chans: int, out_chans: int, use_fc: bool = False) -> nn.Module:
    """conv1x1 -> LayerNorm2d -> conv3x3 -> LayerNorm2d (keys ``0..3``), or a conv1x1 (``use_fc``).

    LayerNorm2d normalises each pixel over channels with eps 1e-6 (detectron2's ``LayerNorm``).
    """
    if use_fc:
        return nn.Conv2d(in_chans, out_chans, kernel_size=1, bias=False)
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=1, bias=False),
        LayerNorm(out_chans, eps=1e-6),
        nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
        LayerNorm(out_chans, eps=1e-6),
    )


def build_dinov2_vit_from_config(cfg) -> nn.Module:
    """The ViT described by ``cfg.MODEL.DINOV2`` (``VIT`` picks the implementation; random init,
    weights loaded separately). Kept for callers of the hand-written-only builder (SegIC)."""
    return build_vit(cfg)


@BACKBONE_REGISTRY.register()
class DINOv2Encoder(Backbone):
    """Frozen ViT (DINOv2 unless MODEL.DINOV2.VIT names another) followed by a trainable neck.

    The ViT (``encoder``) has ``requires_grad=False``, always runs in eval mode and under
    ``no_grad``; only ``neck`` is trained (``frozen=False`` lifts all three, for tiny demo ViTs
    trained from scratch). Outputs (stride = patch size p):

    * ``"encoder"``: (B, D, H/p, W/p) last-block ViT features (before the final norm unless
      MODEL.DINOV2.OUTPUT_NORM);
    * ``"neck"``: (B, C, H/p, W/p) neck features, the input of the M-Former.
    """

    @configurable
    def __init__(
        self,
        *,
        encoder: nn.Module,
        feat_chans: int,
        neck_use_fc: bool = False,
        weights: str = "",
        frozen: bool = True,
    ):
        """
        Args:
            encoder: the ViT (see :mod:`.vit_builder`): (B, 3, H, W) -> (B, D, H/p, W/p).
            feat_chans: neck output channels (= M-Former width).
            neck_use_fc: build the single-conv neck (official ``--image_enc_use_fc``).
            weights: official checkpoint of the ViT's family ("" = keep random init).
            frozen: keep the ViT frozen (official SINE).
        """
        super().__init__()
        self.encoder = encoder
        self.neck = build_neck(encoder.embed_dim, feat_chans, neck_use_fc)
        self.feat_chans = feat_chans
        # Path the encoder weights came from; lets a SINE checkpoint without DINOv2 keys load
        # cleanly (see _keep_loaded_encoder_weights).
        self.encoder_weights = weights
        if weights:
            load_vit_checkpoint(self.encoder, weights)
        self.frozen = frozen
        if frozen:
            self.encoder.requires_grad_(False)
        else:
            for p in unused_vit_parameters(self.encoder):
                p.requires_grad_(False)
            self.encoder.eval()
        self._register_load_state_dict_pre_hook(self._keep_loaded_encoder_weights)

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        d = cfg.MODEL.DINOV2
        return {
            "encoder": build_vit(cfg),
            "feat_chans": cfg.MODEL.SINE.FEAT_CHANS,
            "neck_use_fc": cfg.MODEL.SINE.NECK_USE_FC,
            "weights": d.WEIGHTS,
            "frozen": d.FROZEN,
        }

    @property
    def size_divisibility(self) -> int:
        return self.encoder.patch_size

    def output_shape(self) -> Dict[str, ShapeSpec]:
        stride = self.encoder.patch_size
        return {
            "encoder": ShapeSpec(channels=self.encoder.embed_dim, stride=stride),
            "neck": ShapeSpec(channels=self.feat_chans, stride=stride),
        }

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()  # never switch a frozen DINOv2 to training behaviour
        return self

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            images: (B, 3, H, W) normalised images, H and W multiples of the patch size p.
        Returns:
            {"encoder": (B, D, H/p, W/p), "neck": (B, C, H/p, W/p)}
        """
        # A frozen ViT runs without autograd, unless parameters were added to it and made
        # trainable afterwards (the LoRA adapters of the transfer model, sine/modeling/lora.py).
        trainable = not self.frozen or any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            enc = self.encoder(images)
        return {"encoder": enc, "neck": self.neck(enc)}

    def _keep_loaded_encoder_weights(self, state_dict, prefix, *args):
        """Fill absent DINOv2 keys from MODEL.DINOV2.WEIGHTS when a checkpoint has none.

        Released SINE checkpoints may hold only the neck and decoder; the frozen ViT then comes
        from its own file, as in the official scripts. Keys are only filled when the checkpoint
        has no encoder key at all, so a partial encoder still shows up as missing.
        """
        enc_prefix = prefix + "encoder."
        if any(k.startswith(enc_prefix) for k in state_dict):
            return
        if not self.encoder_weights:
            logger.warning(
                "The checkpoint has no DINOv2 weights (%s*) and MODEL.DINOV2.WEIGHTS is empty: "
                "the encoder stays randomly initialised. Set MODEL.DINOV2.WEIGHTS to the official "
                "DINOv2 checkpoint.",
                enc_prefix,
            )
            return
        logger.info(
            "The checkpoint has no DINOv2 weights (%s*); keeping those loaded from "
            "MODEL.DINOV2.WEIGHTS=%s.",
            enc_prefix,
            self.encoder_weights,
        )
        for k, v in self.encoder.state_dict().items():
            state_dict[enc_prefix + k] = v


def build_dinov2_encoder(cfg, input_shape=None) -> DINOv2Encoder:
    """Build the frozen DINOv2 encoder + neck from ``cfg`` (detectron2 backbone builder style)."""
    return DINOv2Encoder(cfg, input_shape)
