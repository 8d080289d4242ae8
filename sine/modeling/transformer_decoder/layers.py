"""Attention / FFN sub-layers and MLP of the M-Former (spec §2.5, §3.2).

Same structure and parameter names as Mask2Former's ``SelfAttentionLayer``, ``CrossAttentionLayer``,
``FFNLayer`` and ``MLP`` (facebookresearch/Mask2Former, transformer_decoder), so official SINE
weights load unchanged. Sequences are sequence-first: (L, B, C).

Each sub-layer is pre-norm (``x + f(LN(x))``) or post-norm (``LN(x + f(x))``); dropout is 0 in SINE
and therefore omitted.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """Residual self-attention; queries and keys get ``query_pos``, values do not."""

    def __init__(self, d_model: int, nhead: int, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def _attend(self, x, attn_mask, query_pos):
        q = k = _with_pos(x, query_pos)
        return self.self_attn(q, k, value=x, attn_mask=attn_mask, need_weights=False)[0]

    def forward(
        self,
        tgt: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            tgt: (L, B, C) sequence.
            attn_mask: (B * heads, L, L) bool, True = may not attend.
            query_pos: (L, B, C) positional embedding or None.
        Returns:
            (L, B, C)
        """
        if self.normalize_before:
            return tgt + self._attend(self.norm(tgt), attn_mask, query_pos)
        return self.norm(tgt + self._attend(tgt, attn_mask, query_pos))


class CrossAttentionLayer(nn.Module):
    """Residual cross-attention from queries to a memory sequence."""

    def __init__(self, d_model: int, nhead: int, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def _attend(self, x, memory, attn_mask, pos, query_pos):
        return self.multihead_attn(
            query=_with_pos(x, query_pos),
            key=_with_pos(memory, pos),
            value=memory,
            attn_mask=attn_mask,
            need_weights=False,
        )[0]

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        pos: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            tgt: (L, B, C) queries.
            memory: (S, B, C) keys/values.
            attn_mask: (B * heads, L, S) bool, True = may not attend.
            pos: (S, B, C) memory positional embedding or None.
            query_pos: (L, B, C) query positional embedding or None.
        Returns:
            (L, B, C)
        """
        if self.normalize_before:
            return tgt + self._attend(self.norm(tgt), memory, attn_mask, pos, query_pos)
        return self.norm(tgt + self._attend(tgt, memory, attn_mask, pos, query_pos))


class FFNLayer(nn.Module):
    """Residual Linear -> ReLU -> Linear."""

    def __init__(self, d_model: int, dim_feedforward: int, normalize_before: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def _ffn(self, x):
        return self.linear2(F.relu(self.linear1(x)))

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """(L, B, C) -> (L, B, C)"""
        if self.normalize_before:
            return tgt + self._ffn(self.norm(tgt))
        return self.norm(tgt + self._ffn(tgt))


class MLP(nn.Module):
    """Plain MLP with ReLU between layers (keys ``layers.<i>``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform init of every weight matrix (dim > 1), as in Mask2Former/SINE layers."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
