"""Few-shot semantic segmentation episodes: sampling, registration and the episode mapper.

An episode is one query image and K support images of one class (spec §7.1). Episodes are drawn
once, up front, from a seed, so they do not depend on the number of workers or processes.
"""
import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import Instances

from .pair_index import record_categories

logger = logging.getLogger(__name__)

__all__ = ["sample_fss_episodes", "register_fss_episodes", "class_mask", "FSSEpisodeMapper"]


def sample_fss_episodes(records, class_ids, num_episodes, shots, seed):
    """Draw ``num_episodes`` episodes over ``class_ids`` from detectron2 instance records.

    Per episode: a class uniformly among the classes present in at least two images, a query
    uniformly among that class's images, then ``shots`` supports one at a time uniformly among the
    other images (as the official samplers do, supports may repeat each other).

    Returns:
        list[dict]: ``{"episode_id", "class_id", "query": record, "supports": [record, ...]}``.
    """
    class_ids = set(class_ids)
    images_of = {c: [] for c in sorted(class_ids)}
    for i, record in enumerate(records):
        for c in record_categories(record) & class_ids:
            images_of[c].append(i)
    usable = [c for c, imgs in images_of.items() if len(imgs) >= 2]
    if not usable:
        raise ValueError(
            f"no class of {sorted(class_ids)} occurs in two or more images: cannot build episodes"
        )
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(num_episodes):
        c = usable[rng.integers(len(usable))]
        images = images_of[c]
        query = images[rng.integers(len(images))]
        others = [i for i in images if i != query]
        supports = [others[rng.integers(len(others))] for _ in range(shots)]
        episodes.append(
            {
                "episode_id": e,
                "class_id": c,
                "query": records[query],
                "supports": [records[s] for s in supports],
            }
        )
    return episodes


def register_fss_episodes(name, source, class_ids, num_episodes, shots, seed):
    """Register episodes drawn from registered instance dataset ``source`` as ``name``.

    ``class_ids`` are the contiguous ids of ``source`` that form the fold; the metric averages over
    all of them (``fss_class_ids``), as the official protocol does.
    """
    class_ids = [int(c) for c in class_ids]

    def load():
        return sample_fss_episodes(DatasetCatalog.get(source), class_ids, num_episodes, shots, seed)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        evaluator_type="fss", source_dataset=source, shots=shots, fss_class_ids=class_ids
    )


def class_mask(record, class_id):
    """Union of the non-crowd instance masks of ``class_id`` in ``record``: bool (H, W)."""
    size = (record["height"], record["width"])
    annos = [
        a
        for a in record.get("annotations", [])
        if a["category_id"] == class_id and not a.get("iscrowd", 0)
    ]
    if not annos:
        return np.zeros(size, dtype=bool)
    masks = utils.annotations_to_instances(annos, size, mask_format="bitmask").gt_masks.tensor
    return masks.any(dim=0).numpy()


def _resize(array, size, nearest):
    import cv2

    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array, (size, size), interpolation=interp)


class FSSEpisodeMapper:
    """Episode -> model input, resizing every image to a square ``image_size`` (official FSS).

    Output: ``{"image", "height", "width", "references": [{"image", "instances"}],
    "sem_seg_gt": uint8 (S, S) 0/1 (255 = ignore), "class_id", "episode_id", "file_name"}``;
    predictions come back at ``(S, S)``, where the metric is computed, as officially.
    """

    @configurable
    def __init__(self, *, image_size, image_format="RGB"):
        self.image_size = image_size
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg):
        return {"image_size": cfg.TEST.FSS.IMAGE_SIZE, "image_format": cfg.INPUT.FORMAT}

    def _view(self, record, class_id):
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        mask = class_mask(record, class_id)
        image = _resize(image, self.image_size, nearest=False)
        small = _resize(mask.astype(np.uint8), self.image_size, nearest=True)
        if mask.any() and not small.any():
            # A tiny object can vanish under nearest resizing; keep any touched pixel instead.
            small = (_resize(mask.astype(np.float32), self.image_size, nearest=False) > 0)
        mask = small.astype(np.uint8)
        return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))), mask

    def __call__(self, episode):
        episode = copy.deepcopy(episode)
        c = episode["class_id"]
        image, gt = self._view(episode["query"], c)
        references = []
        for k, support in enumerate(episode["supports"]):
            ref_image, ref_mask = self._view(support, c)
            inst = Instances(ref_mask.shape)
            inst.gt_masks = torch.from_numpy(ref_mask[None].astype(bool))
            inst.gt_classes = torch.tensor([c])
            inst.ins_ids = torch.tensor([k])
            references.append({"image": ref_image, "instances": inst})
        return {
            "image": image,
            "height": self.image_size,
            "width": self.image_size,
            "references": references,
            "sem_seg_gt": gt,
            "class_id": c,
            "episode_id": episode["episode_id"],
            "file_name": episode["query"]["file_name"],
        }
