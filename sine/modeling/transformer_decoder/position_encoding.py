"""Sine positional encoding of a feature grid (DETR / Mask2Former style, spec §2.6)."""
import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Normalised 2-D sine/cosine encoding; no padding mask (SINE never masks padding).

    Channel layout: ``[pos_y (num_pos_feats), pos_x (num_pos_feats)]``, each interleaved as
    ``[sin(p / t_0), cos(p / t_1), sin(p / t_2), ...]`` with ``t_k = T^(2 floor(k/2) / F)`` and
    ``p = i / (n + 1e-6) * scale`` for row/column ``i = 1..n``.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0,
                 normalize: bool = True, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(n,) positions -> (n, num_pos_feats) interleaved sin/cos."""
        if self.normalize:
            coords = coords / (coords[-1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=coords.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos = coords[:, None] / dim_t
        return torch.stack((pos[:, 0::2].sin(), pos[:, 1::2].cos()), dim=2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, C, h, w) feature map (only its shape, device and dtype are used).
        Returns:
            (B, 2 * num_pos_feats, h, w) positional encoding.
        """
        B, _, h, w = x.shape
        ys = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)
        pos_y = self._encode(ys)[:, None, :].expand(h, w, -1)
        pos_x = self._encode(xs)[None, :, :].expand(h, w, -1)
        pos = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)
        return pos.unsqueeze(0).expand(B, -1, -1, -1).to(x.dtype)
