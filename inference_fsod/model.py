"""Instance segmentation of test images from cached reference tokens (FSOD test pass, spec §7.2)."""
from typing import Dict, List

import torch
from torch import nn

from sine.modeling.in_context import (
    ImageGeometry,
    InContextSegmenter,
    ReferenceTokens,
    select_features,
)

__all__ = ["PrototypeInstanceSegmenter"]


class PrototypeInstanceSegmenter(nn.Module):
    """An in-context model decoding every image with the same precomputed reference tokens
    (for SINE: the class prototypes of the "fsod" pooling, no ID tokens).

    Callable by detectron2's ``inference_on_dataset``: inputs as produced by
    ``FSODTestMapper``, outputs ``[{"instances": Instances}]`` at each input's original size with
    ``pred_masks``, ``pred_boxes`` (tight boxes of the masks), ``scores`` and ``pred_classes``
    (contiguous ids), from the model's ``segment(outputs={"instances"})`` (for SINE: spec §5.2
    with ``MODEL.SINE.TEST.TOPK_PER_IMAGE`` / ``INSTANCE_SCORE_THRESH``, 100 / 0 officially).
    """

    def __init__(self, model: InContextSegmenter, tokens: ReferenceTokens):
        """
        Args:
            model: a built in-context model with its weights loaded.
            tokens: the reference tokens of the reference set (e.g. from
                ``inference_fsod.prototype_cache``), moved to the model's device.
        """
        super().__init__()
        self.model = model
        self.tokens = tokens.to(model.device)

    @torch.no_grad()
    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        size = self.model.pad_size
        for x in batched_inputs:
            if max(x["image"].shape[-2:]) > size:
                raise ValueError(f"image {tuple(x['image'].shape)} is larger than the model's "
                                 f"pad size {size}; resize it (FSODTestMapper does)")
        images = torch.stack([self.model.preprocess_image(x["image"], size)
                              for x in batched_inputs])
        features = self.model.encode(images)
        return [{"instances": self.segment(select_features(features, b), x)}
                for b, x in enumerate(batched_inputs)]

    def segment(self, features, x: Dict):
        """One target's features (batch 1) -> ``Instances`` at its output size."""
        h, w = x["image"].shape[-2:]
        size = self.model.pad_size
        output_size = (int(x.get("height", h)), int(x.get("width", w)))
        geometry = ImageGeometry((size, size), (h, w), output_size)
        return self.model.segment(features, self.tokens, geometry,
                                  outputs={"instances"})["instances"]
