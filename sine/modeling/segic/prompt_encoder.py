"""SegIC's prompt encoder: SAM's ``PromptEncoder`` plus instruction tokens (spec §1.3-§1.6).

Built on the ``segment-anything`` package so that parameter names (``pe_layer``,
``point_embeddings.{0..3}``, ``not_a_point_embed``, ``mask_downscaling.{0,1,3,4,6}``,
``no_mask_embed``) and numerics are SAM's. Two differences from SAM, both from SegIC:

* the dense-prompt stack downsamples the input-size coarse mask to the feature grid with
  configurable strides (``(7, 2)`` for DINOv2/14: 896 -> 128 -> 64; SAM's is ``(2, 2)`` from 4x the
  grid);
* after the point/box tokens come the text token and the visual tokens (``texts``).
"""
from typing import Optional, Sequence, Tuple

import torch
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.prompt_encoder import PromptEncoder
from torch import nn

__all__ = ["SegICPromptEncoder"]


class SegICPromptEncoder(PromptEncoder):
    """SAM prompt encoder whose mask stack maps an S x S coarse mask onto the g x g grid."""

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int = 16,
        mask_down_strides: Sequence[int] = (7, 2),
    ):
        """
        Args:
            embed_dim: decoder width D.
            image_embedding_size: feature grid (g, g).
            input_image_size: model input (S, S); point/box coordinates are pixels of it.
            mask_in_chans: hidden channels of the mask stack (its first conv has a quarter).
            mask_down_strides: the two conv strides (= kernel sizes); their product must be
                S / g.
        """
        super().__init__(embed_dim, image_embedding_size, input_image_size, mask_in_chans)
        s1, s2 = mask_down_strides
        if input_image_size[0] != image_embedding_size[0] * s1 * s2:
            raise ValueError(
                f"mask-downscaling strides {tuple(mask_down_strides)} map {input_image_size[0]} "
                f"to {input_image_size[0] / (s1 * s2):g}, not the feature grid "
                f"{image_embedding_size[0]}; set MODEL.SEGIC.MASK_DOWN_STRIDES so that their "
                "product is the patch size times the grid reduction"
            )
        self.mask_input_size = tuple(input_image_size)
        # Same layer layout and names as SAM's stack (indices 0, 1, 3, 4, 6), other strides.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=s1, stride=s1),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=s2, stride=s2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )

    def forward(
        self,
        points: Tuple[torch.Tensor, torch.Tensor],
        boxes: Optional[torch.Tensor],
        masks: torch.Tensor,
        texts: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            points: coords (n, p, 2) integer pixels (x, y) of the S x S input and labels (n, p)
                (1 positive, 0 negative).
            boxes: (n, 4) XYXY inclusive pixel boxes, or None (then a not-a-point pad token).
            masks: (n, 1, S, S) dense prompts (the coarse masks).
            texts: (n, t, D) instruction tokens appended as they are (text, visual, ...).
        Returns:
            sparse (n, p + (2 if boxes else 1) + t, D) and dense (n, D, g, g) embeddings.
        """
        coords, labels = points
        sparse = [self._embed_points(coords, labels, pad=boxes is None)]
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse.append(texts)
        return torch.cat(sparse, dim=1), self._embed_masks(masks)
