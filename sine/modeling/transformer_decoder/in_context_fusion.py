"""Mask pooling and In-Context Fusion (spec §2.2, §2.5)."""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .layers import CrossAttentionLayer, FFNLayer, SelfAttentionLayer


class MaskPooling(nn.Module):
    """Average features over the pixels where a mask is > 0.

    The threshold is applied to the (possibly bilinearly resized, hence soft) mask, so every pixel
    a mask touches counts fully. No gradient flows into the mask.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W) features.
            mask: (B, Q, H, W) masks (any real values; > 0 is foreground).
        Returns:
            (B, Q, C) pooled features (zeros for empty masks).
        """
        if mask.shape[-2:] != x.shape[-2:]:
            mask = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        with torch.no_grad():
            mask = (mask > 0).to(x.dtype)
            mask = mask / (mask.sum(dim=(-2, -1), keepdim=True) + 1e-8)
        return torch.einsum("bchw,bqhw->bqc", x, mask)


class FusionLayer(nn.Module):
    """Post-norm transformer encoder layer: self-attention -> cross-attention -> FFN.

    No positional encodings and no attention masks (spec §2.5).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.transformer_self_attention_layer = SelfAttentionLayer(d_model, nhead, False)
        self.transformer_cross_attention_layer = CrossAttentionLayer(d_model, nhead, False)
        self.transformer_ffn_layer = FFNLayer(d_model, dim_feedforward, False)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(L, B, C) queries attending to (S, B, C) memory -> (L, B, C)."""
        tgt = self.transformer_self_attention_layer(tgt)
        tgt = self.transformer_cross_attention_layer(tgt, memory)
        return self.transformer_ffn_layer(tgt)


class InContextFusion(nn.ModuleList):
    """Stack of FusionLayers shared by both directions (keys ``<i>.*``).

    Per layer, simultaneously: reference tokens attend to the target image tokens and image tokens
    attend to the (old) reference tokens, with the same weights; each side then adds an outer
    residual (``new + old``).
    """

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int):
        super().__init__(FusionLayer(d_model, nhead, dim_feedforward) for _ in range(num_layers))

    def forward(
        self, ref_tokens: torch.Tensor, image_tokens: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            ref_tokens: (nm + nc, B, C) ID tokens then semantic prototypes.
            image_tokens: (h * w, B, C) target features.
        Returns:
            fused (ref_tokens, image_tokens), same shapes.
        """
        for layer in self:
            new_ref = layer(ref_tokens, image_tokens)
            new_image = layer(image_tokens, ref_tokens)
            ref_tokens, image_tokens = new_ref + ref_tokens, new_image + image_tokens
        return ref_tokens, image_tokens
