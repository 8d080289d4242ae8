"""Instance segmentation of test images from cached class prototypes (FSOD test pass, spec §7.2)."""
from typing import Dict, List

import torch
from torch import nn

from sine.modeling.postprocessing import instance_inference, resize_mask_logits

__all__ = ["PrototypeInstanceSegmenter"]


class PrototypeInstanceSegmenter(nn.Module):
    """A SINE decoding every image with the same precomputed prototypes and no ID queries.

    Callable by detectron2's ``inference_on_dataset``: inputs as produced by
    ``FSODTestMapper``, outputs ``[{"instances": Instances}]`` at each input's original size with
    ``pred_masks``, ``pred_boxes`` (tight boxes of the masks), ``scores`` and ``pred_classes``
    (contiguous ids). Scoring, top-k and threshold follow spec §5.2 with
    ``MODEL.SINE.TEST.TOPK_PER_IMAGE`` / ``INSTANCE_SCORE_THRESH`` (100 / 0 officially).
    """

    def __init__(self, model: nn.Module, class_ids: torch.Tensor, prototypes: torch.Tensor):
        """
        Args:
            model: a built ``SINE`` with its weights loaded.
            class_ids: (nc,) int64 contiguous class id of every prototype.
            prototypes: (nc, C) class prototypes (before In-Context Fusion).
        """
        super().__init__()
        if prototypes.dim() != 2 or prototypes.shape[0] != class_ids.shape[0]:
            raise ValueError(f"prototypes {tuple(prototypes.shape)} do not match class_ids "
                             f"{tuple(class_ids.shape)}: expected (nc, C) and (nc,)")
        self.model = model
        self.register_buffer("class_ids", class_ids.long().to(model.device), persistent=False)
        self.register_buffer("prototypes", prototypes.float().to(model.device), persistent=False)

    @torch.no_grad()
    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        size = self.model.pad_size
        for x in batched_inputs:
            if max(x["image"].shape[-2:]) > size:
                raise ValueError(f"image {tuple(x['image'].shape)} is larger than "
                                 f"MODEL.SINE.PAD_SIZE={size}; resize it (FSODTestMapper does)")
        images = torch.stack([self.model.preprocess_image(x["image"], size)
                              for x in batched_inputs])
        feats = self.model.encode(images)
        return [{"instances": self.segment(feats[b:b + 1], x)}
                for b, x in enumerate(batched_inputs)]

    def segment(self, tar_feat: torch.Tensor, x: Dict):
        """Decode one target's (1, C, h, w) features into ``Instances`` at its output size."""
        nc, dim = self.prototypes.shape
        raw = self.model.transformer_decoder.forward_tokens(
            self.prototypes.new_zeros((1, 0, dim)),  # no ID tokens (use_id_query False)
            self.prototypes[None],
            self.class_ids.new_zeros((0,)),
            self.class_ids,
            tar_feat,
        )
        h, w = x["image"].shape[-2:]
        size = self.model.pad_size
        output_size = (int(x.get("height", h)), int(x.get("width", w)))
        mask_logits = resize_mask_logits(raw["pred_ins_masks"][0], (size, size), (h, w),
                                         output_size)
        return instance_inference(
            raw["pred_ins_logits"][0], mask_logits, self.class_ids,
            self.model.test_topk_per_image, self.model.instance_score_thresh,
        )
