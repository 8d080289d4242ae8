"""SegIC's mask decoder: SAM's ``MaskDecoder`` over a ``TwoWayTransformer`` (spec §1.6).

Taken from the ``segment-anything`` package unchanged: its parameter names are those of the
official SegIC checkpoints (``mask_decoder.transformer.layers.N...``, ``iou_token``,
``mask_tokens``, ``output_upscaling``, ``output_hypernetworks_mlps``, ``iou_prediction_head``) and
its computation is the one SegIC trains (first block without PE and residual, token->image and
image->token attention at half width, hypernetwork dot product with the 4x upscaled features).
SegIC always reads mask token 0 (``multimask_output=False``): the paper's single query.
"""
from segment_anything.modeling.mask_decoder import MaskDecoder
from segment_anything.modeling.transformer import TwoWayTransformer

__all__ = ["build_mask_decoder"]


def build_mask_decoder(width: int, depth: int, num_heads: int, mlp_dim: int,
                       num_multimask_outputs: int = 3) -> MaskDecoder:
    """SAM mask decoder of width D (IoU head hidden size D, as SegIC builds it).

    Forward: ``(image_embeddings (1, D, g, g), image_pe (1, D, g, g), sparse (n, k, D),
    dense (n, D, g, g), multimask_output=False)`` -> logits (n, 1, 4g, 4g), IoU (n, 1).
    """
    transformer = TwoWayTransformer(depth=depth, embedding_dim=width, num_heads=num_heads,
                                    mlp_dim=mlp_dim, attention_downsample_rate=2)
    return MaskDecoder(transformer_dim=width, transformer=transformer,
                       num_multimask_outputs=num_multimask_outputs, iou_head_depth=3,
                       iou_head_hidden_dim=width)
