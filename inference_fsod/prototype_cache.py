"""The one-off reference step of the FSOD protocol: reference tokens, cached on disk.

The official pipeline runs a "preprocess" pass that encodes every reference image and stores the
pooled class prototypes, then a test pass that decodes every test image with those prototypes
(spec §7.2). Here :func:`load_or_compute_prototypes` does the first pass once per
(weights, references = K and seed) through the model's surface (``encode`` in batches, then one
``reference_tokens`` over every reference; for SINE with the "fsod" pooling: one prototype per
class, no ID token) and saves the tokens; a rerun loads the file and encodes no reference image.
"""
import hashlib
import json
import logging
import os
from typing import Dict, List, Optional

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from sine.engine.predictor import pad_masks
from sine.evaluation.resume import model_identity
from sine.modeling.in_context import (
    InContextSegmenter,
    ReferenceTokens,
    concat_features,
    select_features,
)
from sine.utils.io import atomic_write

from . import register_fsod  # noqa: F401  (registers the reference sets it reads)
from .data import group_references_by_image, read_reference_image

logger = logging.getLogger(__name__)

__all__ = ["compute_prototypes", "load_or_compute_prototypes", "prototype_cache_key"]


def prototype_cache_key(cfg, dataset_name: str) -> Dict:
    """Everything the prototypes depend on: weights, model config and the reference set."""
    meta = MetadataCatalog.get(dataset_name)
    return {
        "references": dataset_name,
        "shots": meta.get("shot"),
        "seed": meta.get("fewshot_seed"),
        "input_format": cfg.INPUT.FORMAT,  # BGR (official) and RGB give other prototypes
        **model_identity(cfg),
    }


def _cache_path(cache_dir: str, key: Dict) -> str:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cache_dir, f"{key['references']}-{digest}.pth")


@torch.no_grad()
def compute_prototypes(
    model: InContextSegmenter, records: List[Dict], batch_size: int = 4,
    class_names: Optional[List[str]] = None, image_format: str = "RGB",
) -> ReferenceTokens:
    """Encode every reference image once and pool the reference tokens of all of them.

    As officially, every annotation is one reference (its image's features and its mask), in
    record order, so the "fsod" pooling orders the classes by first appearance (spec §2.4).
    Empty masks are kept: a class whose masks are all empty gets a zero prototype and still
    competes. An image holding several annotations is encoded once. The features are kept
    until the one pooling (what ``encode`` returns; for SINE the (C, S/14, S/14) neck
    features, 4 MiB per reference at 896).

    Args:
        model: the in-context model (its configured reference pooling; "fsod" for SINE).
        records: reference records (annotations with contiguous ``category_id``).
        batch_size: reference images per encoder batch.
        class_names: the contiguous class names; classes without a reference mask are logged.
        image_format: channel order fed to the model (``INPUT.FORMAT``; "BGR" officially).
    Returns:
        the reference tokens, on the CPU.
    """
    groups = group_references_by_image(records)
    size = model.pad_size
    features, masks, labels = [], [], []
    for start in range(0, len(groups), batch_size):
        batch = [read_reference_image(r, size, image_format)
                 for r in groups[start:start + batch_size]]
        images = torch.stack([model.preprocess_image(b[0], size) for b in batch])
        features.append(model.encode(images))
        masks += [pad_masks(b[1], size).to(model.device) for b in batch]
        labels += [b[2].to(model.device) for b in batch]
        logger.info("Encoded reference images %d-%d of %d", start + 1, start + len(batch),
                    len(groups))
    if not features:
        raise ValueError("no reference record; cannot build prototypes")
    # Back to one reference per annotation, in record order (group_references_by_image keeps
    # each image's annotations in record order).
    group_of = {g["file_name"]: i for i, g in enumerate(groups)}
    used = [0] * len(groups)
    image_index, ref_masks, ref_labels = [], [], []
    for record in records:
        g = group_of[record["file_name"]]
        for _ in record["annotations"]:
            j = used[g]
            used[g] += 1
            image_index.append(g)
            ref_masks.append(masks[g][j:j + 1])
            ref_labels.append(labels[g][j:j + 1])
    with_pixels = {int(lab) for m, lab in zip(ref_masks, ref_labels) if m.any()}
    empty = sorted({int(lab) for lab in ref_labels} - with_pixels)
    if empty:
        logger.warning("classes %s have only empty reference masks: zero prototypes",
                       [class_names[c] if class_names else c for c in empty])
    missing = [name for c, name in enumerate(class_names or [])
               if c not in with_pixels and c not in empty]
    if missing:
        logger.warning("no reference for classes %s: they cannot be predicted", missing)
    feats = select_features(concat_features(features), image_index)
    return model.reference_tokens(feats, ref_masks, ref_labels).to("cpu")


def _load(path: str, key: Dict):
    if not os.path.isfile(path):
        return None
    data = torch.load(path, map_location="cpu")
    if data.get("key") != key or "tokens" not in data:
        logger.warning("Ignoring prototype cache %s: it was made for %s or by an older version",
                       path, data.get("key"))
        return None
    return ReferenceTokens.from_dict(data["tokens"])


def load_or_compute_prototypes(
    get_model, cfg, dataset_name: str, cache_dir: str, batch_size: int = 4
) -> ReferenceTokens:
    """Reference tokens of reference set ``dataset_name``, from the cache or computed once.

    In a multi-process run the main process computes and saves them; the others load the file.

    Args:
        get_model: zero-argument callable returning the model (called only on a cache miss).
    Returns:
        the tokens (contiguous class ids), on the CPU.
    """
    key = prototype_cache_key(cfg, dataset_name)
    path = _cache_path(cache_dir, key)
    if comm.is_main_process():
        cached = _load(path, key)
        if cached is None:
            meta = MetadataCatalog.get(dataset_name)
            records = DatasetCatalog.get(dataset_name)
            logger.info("Computing prototypes of '%s' (%d references)", dataset_name, len(records))
            tokens = compute_prototypes(get_model(), records, batch_size, meta.thing_classes,
                                        cfg.INPUT.FORMAT)
            with atomic_write(path, "wb") as f:
                torch.save({"key": key, "tokens": tokens.to_dict()}, f)
            logger.info("Saved prototypes to %s", path)
        else:
            logger.info("Loaded cached prototypes %s", path)
    comm.synchronize()
    cached = _load(path, key)
    if cached is None:
        raise RuntimeError(f"prototype cache {path} is missing or stale after it was written")
    return cached
