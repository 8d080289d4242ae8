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


def multi_head_attention(
    attn: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    fast: bool = True,
) -> torch.Tensor:
    """``attn(query, key, value, attn_mask)[0]`` with the parameters of ``attn``.

    ``fast=False`` is the official computation: ``nn.MultiheadAttention`` with its default
    ``need_weights=True``, which materialises the (B * heads, L, S) softmax. ``fast=True`` is
    fused SDPA on the same ``in_proj_weight``/``in_proj_bias``/``out_proj`` parameters (equal
    up to float rounding; differentiable), sharing one projection matmul between inputs that
    are the same tensor (q = k in decoder self-attention, q = k = v in fusion).

    Args:
        query: (L, B, C); key, value: (S, B, C) (sequence-first, as ``nn.MultiheadAttention``).
        attn_mask: bool, True = may not attend; (L, S) or (B * heads, L, S) (a stride-0
            expand of one (L, S) mask over B * heads is passed to SDPA as that one mask).
    Returns:
        (L, B, C)
    """
    if not fast:
        return attn(query, key, value, attn_mask=attn_mask, need_weights=True)[0]
    L, B, C = query.shape
    S, heads = key.shape[0], attn.num_heads
    q, k, v = _in_projection(attn, query, key, value)
    # (len, B, C) -> (B, heads, len, C / heads)
    q, k, v = (t.reshape(t.shape[0], B, heads, C // heads).permute(1, 2, 0, 3) for t in (q, k, v))
    if attn_mask is not None:
        shared = shared_head_mask(attn_mask)
        if shared is not None:
            attn_mask = shared  # one mask for every head: SDPA broadcasts it
        elif attn_mask.dim() == 3:
            attn_mask = attn_mask.reshape(-1, heads, L, S)
        # SDPA's boolean masks mean the opposite: True = may attend.
        attn_mask = ~attn_mask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out = out.permute(2, 0, 1, 3).reshape(L, B, C)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


def shared_head_mask(mask: torch.Tensor) -> Optional[torch.Tensor]:
    """The one (L, S) mask behind a (B * heads, L, S) mask that is a stride-0 ``expand`` of it
    (every head and batch element the same: the fast path's cross-attention mask), else None."""
    if mask.dim() == 3 and mask.shape[0] > 1 and mask.stride(0) == 0:
        return mask[0]
    return None


def _in_projection(attn: nn.MultiheadAttention, query, key, value):
    """q, k, v projections of ``attn``; one matmul per distinct input tensor."""
    w, b = attn.in_proj_weight, attn.in_proj_bias
    C = query.shape[-1]
    if query is key and key is value:
        return F.linear(query, w, b).chunk(3, dim=-1)
    if query is key:
        q, k = F.linear(query, w[: 2 * C], b[: 2 * C]).chunk(2, dim=-1)
        return q, k, F.linear(value, w[2 * C :], b[2 * C :])
    q = F.linear(query, w[:C], b[:C])
    if key is value:
        return (q, *F.linear(key, w[C:], b[C:]).chunk(2, dim=-1))
    return q, F.linear(key, w[C : 2 * C], b[C : 2 * C]), F.linear(value, w[2 * C :], b[2 * C :])


class SelfAttentionLayer(nn.Module):
    """Residual self-attention; queries and keys get ``query_pos``, values do not."""

    fast_inference: bool = True  # fused SDPA; False = official unfused attention

    def __init__(self, d_model: int, nhead: int, normalize_before: bool = False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def _attend(self, x, attn_mask, query_pos):
        q = k = _with_pos(x, query_pos)
        return multi_head_attention(self.self_attn, q, k, x, attn_mask, self.fast_inference)

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

    fast_inference: bool = True  # fused SDPA; False = official unfused attention

    def __init__(self, d_model: int, nhead: int, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def _attend(self, x, memory, attn_mask, pos, query_pos):
        return multi_head_attention(
            self.multihead_attn,
            _with_pos(x, query_pos),
            _with_pos(memory, pos),
            memory,
            attn_mask,
            self.fast_inference,
        )

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
