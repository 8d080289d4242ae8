"""The one-off reference step of the FSOD protocol: class prototypes, cached on disk.

The official pipeline runs a "preprocess" pass that encodes every reference image and stores the
pooled class prototypes, then a test pass that decodes every test image with those prototypes
(spec §7.2). Here :func:`load_or_compute_prototypes` does the first pass once per
(weights, references = K and seed) and saves ``{class_ids, prototypes}``; a rerun loads the file
and encodes no reference image.
"""
import hashlib
import json
import logging
import os
from typing import Dict, List, Tuple

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm

from sine.modeling.transformer_decoder.reference_pooling import fsod_prototype_sums
from sine.utils.io import atomic_write

from .data import group_references_by_image, read_reference_image

logger = logging.getLogger(__name__)

__all__ = ["compute_prototypes", "load_or_compute_prototypes", "prototype_cache_key"]


def _file_identity(path: str):
    """What identifies a weights file cheaply: its real path, size and modification time."""
    if not path:
        return ""
    if not os.path.isfile(path):
        return path  # e.g. a URL handled by the checkpointer
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def prototype_cache_key(cfg, dataset_name: str) -> Dict:
    """Everything the prototypes depend on: weights, model config and the reference set."""
    model_cfg = cfg.MODEL.clone()
    model_cfg.defrost()
    model_cfg.DEVICE = ""  # the same prototypes on any device
    meta = MetadataCatalog.get(dataset_name)
    return {
        "references": dataset_name,
        "shots": meta.get("shot"),
        "seed": meta.get("fewshot_seed"),
        "weights": _file_identity(cfg.MODEL.WEIGHTS),
        "dinov2_weights": _file_identity(cfg.MODEL.DINOV2.WEIGHTS),
        "model_config_sha1": hashlib.sha1(model_cfg.dump().encode()).hexdigest(),
    }


def _cache_path(cache_dir: str, key: Dict) -> str:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cache_dir, f"{key['references']}-{digest}.pth")


@torch.no_grad()
def compute_prototypes(
    predictor, records: List[Dict], num_classes: int, batch_size: int = 4
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Encode every reference image once and pool one prototype per class ("fsod" pooling).

    Args:
        predictor: a ``SinePredictor`` (its model encodes; images use its ``image_size``).
        records: reference records (annotations with contiguous ``category_id``).
        num_classes: size of the contiguous class space.
        batch_size: reference images per encoder batch.
    Returns:
        class_ids (nc,) int64 and prototypes (nc, C) float32, on the CPU, for the classes that
        have at least one reference pixel.
    """
    groups = group_references_by_image(records)
    sums, counts = None, None
    for start in range(0, len(groups), batch_size):
        batch = [read_reference_image(r, predictor.image_size)
                 for r in groups[start:start + batch_size]]
        batch = [b for b in batch if len(b[1])]
        if not batch:
            continue
        refs = predictor.encode_references(
            [b[0] for b in batch], [b[1] for b in batch], [b[2] for b in batch],
            [torch.arange(len(b[2])) for b in batch],
        )
        # Pooling runs on the 4x mask-feature grid of the decoder (spec §2.1).
        grid = tuple(4 * s for s in refs.feats.shape[-2:])
        labels, part_sums, part_counts = fsod_prototype_sums(refs.feats, refs.masks, refs.labels,
                                                             grid)
        if sums is None:
            sums = part_sums.new_zeros((num_classes, part_sums.shape[1]))
            counts = part_counts.new_zeros((num_classes,))
        sums[labels] += part_sums
        counts[labels] += part_counts
        logger.info("Encoded reference images %d-%d of %d", start + 1, start + len(batch),
                    len(groups))
    if sums is None:
        raise ValueError("no reference image has a non-empty mask; cannot build prototypes")
    present = torch.where(counts > 0)[0]
    prototypes = sums[present] / (counts[present, None] + 1e-8)
    return present.cpu(), prototypes.float().cpu()


def _load(path: str, key: Dict):
    if not os.path.isfile(path):
        return None
    data = torch.load(path, map_location="cpu")
    if data.get("key") != key:
        logger.warning("Ignoring prototype cache %s: it was made for %s", path, data.get("key"))
        return None
    return data["class_ids"], data["prototypes"]


def load_or_compute_prototypes(
    predictor, cfg, dataset_name: str, cache_dir: str, batch_size: int = 4
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class prototypes of reference set ``dataset_name``, from the cache or computed once.

    In a multi-process run the main process computes and saves them; the others load the file.

    Returns:
        class_ids (nc,) int64 contiguous ids and prototypes (nc, C), on the CPU.
    """
    key = prototype_cache_key(cfg, dataset_name)
    path = _cache_path(cache_dir, key)
    if comm.is_main_process():
        cached = _load(path, key)
        if cached is None:
            meta = MetadataCatalog.get(dataset_name)
            records = DatasetCatalog.get(dataset_name)
            logger.info("Computing prototypes of '%s' (%d references)", dataset_name, len(records))
            class_ids, prototypes = compute_prototypes(
                predictor, records, len(meta.thing_classes), batch_size
            )
            missing = sorted(set(range(len(meta.thing_classes))) - set(class_ids.tolist()))
            if missing:
                logger.warning("'%s' has no reference for classes %s: they cannot be predicted",
                               dataset_name, [meta.thing_classes[i] for i in missing])
            with atomic_write(path, "wb") as f:
                torch.save({"key": key, "class_ids": class_ids, "prototypes": prototypes}, f)
            logger.info("Saved prototypes to %s", path)
        else:
            logger.info("Loaded cached prototypes %s", path)
    comm.synchronize()
    cached = _load(path, key)
    if cached is None:
        raise RuntimeError(f"prototype cache {path} is missing or stale after it was written")
    return cached
