"""Multi-dataset in-context training loader (spec §6.4), built on detectron2's loader machinery."""
import itertools
import logging

import numpy as np
import torch
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.utils import comm
from torch.utils.data.sampler import Sampler

from .dataset_mappers.in_context_pair_mapper import InContextPairMapper
from .pair_index import CategoryIndex

logger = logging.getLogger(__name__)

__all__ = ["WeightedTrainingSampler", "build_pair_items", "build_pair_train_loader",
           "build_sine_train_loader", "build_transfer_train_loader"]


class WeightedTrainingSampler(Sampler):
    """Infinite stream of indices drawn with replacement from ``weights``.

    Like detectron2's ``TrainingSampler``, every rank draws from one seeded stream and keeps
    every ``world_size``-th index, so ranks see disjoint parts of the same sequence.
    """

    def __init__(self, weights, seed=None, chunk=4096):
        self._weights = torch.as_tensor(weights, dtype=torch.float64)
        if self._weights.numel() == 0 or not (self._weights > 0).any():
            raise ValueError("WeightedTrainingSampler needs at least one positive weight")
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = comm.get_rank(), comm.get_world_size()
        self._chunk = chunk

    def __iter__(self):
        yield from itertools.islice(self._infinite(), self._rank, None, self._world_size)

    def _infinite(self):
        g = torch.Generator().manual_seed(self._seed)
        while True:
            yield from torch.multinomial(self._weights, self._chunk, True, generator=g).tolist()


def build_pair_items(indexes, dataset_weights):
    """One item per (dataset, category) and its sampling weight.

    Within a dataset categories are uniform (official: category first, then an image); across
    datasets the mass follows ``dataset_weights``.
    """
    items, weights = [], []
    for d, (index, w) in enumerate(zip(indexes, dataset_weights)):
        items += [{"dataset": d, "category_id": int(c)} for c in index.categories]
        weights += [w / len(index.categories)] * len(index.categories)
    return items, np.asarray(weights)


def _dataset_weights(cfg):
    names = cfg.DATASETS.TRAIN
    weights = list(cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS) or [1.0] * len(names)
    if len(weights) != len(names):
        raise ValueError(
            f"DATASETS.TRAIN_SAMPLING_WEIGHTS has {len(weights)} entries for "
            f"{len(names)} datasets in DATASETS.TRAIN"
        )
    return weights


def build_pair_train_loader(cfg, mapper=None):
    """Loader of reference/target pairs over every dataset of ``DATASETS.TRAIN``."""
    names = cfg.DATASETS.TRAIN
    if not names:
        raise ValueError("DATASETS.TRAIN is empty: name at least one registered dataset")
    indexes = []
    for name in names:
        dicts = DatasetCatalog.get(name)
        if len(dicts) == 0:
            raise ValueError(f"training dataset '{name}' is empty")
        indexes.append(CategoryIndex(name, dicts))
        logger.info(f"{name}: {len(dicts)} images, {len(indexes[-1].categories)} categories")
    items, weights = build_pair_items(indexes, _dataset_weights(cfg))
    mapper = mapper or InContextPairMapper(cfg, indexes=indexes)
    return build_detection_train_loader(
        items,
        mapper=mapper,
        sampler=WeightedTrainingSampler(weights, seed=cfg.SEED if cfg.SEED >= 0 else None),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def build_transfer_train_loader(cfg):
    """Loader of single target images (LoRA transfer) over ``DATASETS.TRAIN``, with
    detectron2's infinite training sampler."""
    from .dataset_mappers.transfer_mapper import TransferMapper

    if not cfg.DATASETS.TRAIN:
        raise ValueError("DATASETS.TRAIN is empty: name at least one registered dataset")
    return build_detection_train_loader(cfg, mapper=TransferMapper(cfg))


_TRAIN_LOADERS = {"in_context_pair": build_pair_train_loader,
                  "transfer": build_transfer_train_loader}


def build_sine_train_loader(cfg):
    """The training loader named by ``INPUT.DATASET_MAPPER_NAME``."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in _TRAIN_LOADERS:
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME {name!r} unknown; choose from "
                         f"{sorted(_TRAIN_LOADERS)}")
    return _TRAIN_LOADERS[name](cfg)
