"""Training-side glue of the LoRA transfer model (sine/modeling/meta_arch/transfer.py):
prototype initialisation from the training data, loading the adapter file, saving it."""
import logging
import os

from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.engine import HookBase
from detectron2.utils import comm
from tqdm import tqdm

from ..data.dataset_mappers.in_context_pair_mapper import read_training_view

__all__ = ["ADAPTER_FILE", "AdapterSaver", "is_transfer_model", "prepare_transfer_model"]

logger = logging.getLogger(__name__)

ADAPTER_FILE = "adapter_final.pth"


def is_transfer_model(model) -> bool:
    from ..modeling.meta_arch.transfer import SINETransfer

    return isinstance(getattr(model, "module", model), SINETransfer)


def _init_views(cfg):
    """(image, Instances) of the first PROTOTYPE_INIT_IMAGES records of DATASETS.TRAIN,
    resized so that the longer side is INPUT.IMAGE_SIZE (no other augmentation)."""
    size = cfg.INPUT.IMAGE_SIZE
    resize = T.AugmentationList([T.ResizeShortestEdge(size, size)])
    records = [r for name in cfg.DATASETS.TRAIN for r in DatasetCatalog.get(name)]
    for record in records[: cfg.MODEL.TRANSFER.PROTOTYPE_INIT_IMAGES]:
        view = read_training_view(record, resize, cfg.INPUT.FORMAT, cfg.INPUT.SKIP_BAD_IMAGES)
        if view is not None:
            yield view


def prepare_transfer_model(cfg, model):
    """Give a freshly built transfer model its prototypes: from ``ADAPTER_WEIGHTS`` when set,
    else initialised as ``PROTOTYPE_INIT`` says. Returns the model."""
    t = cfg.MODEL.TRANSFER
    if t.ADAPTER_WEIGHTS:
        model.load_adapter(t.ADAPTER_WEIGHTS)
        logger.info(f"loaded the transfer adapter {t.ADAPTER_WEIGHTS}")
    elif t.PROTOTYPE_INIT == "reference":
        num = t.PROTOTYPE_INIT_IMAGES
        views = tqdm(_init_views(cfg), total=num, desc="prototypes from training masks",
                     disable=not comm.is_main_process())
        seen = model.initialise_prototypes(views)
        missing = model.prototypes.shape[0] - len(seen)
        logger.info(f"prototypes of {len(seen)} classes pooled from {num} training images"
                    + (f"; {missing} classes unseen keep a random prototype" if missing else ""))
    elif t.PROTOTYPE_INIT != "random":
        raise ValueError(f"MODEL.TRANSFER.PROTOTYPE_INIT {t.PROTOTYPE_INIT!r}: use 'reference' "
                         "or 'random'")
    return model


class AdapterSaver(HookBase):
    """Write the adapter file (LoRA + prototypes, no base weights) next to the checkpoints
    at the end of training."""

    def __init__(self, output_dir):
        self.output_dir = output_dir

    def after_train(self):
        if not comm.is_main_process():
            return
        model = self.trainer.model
        model = getattr(model, "module", model)
        path = os.path.join(self.output_dir, ADAPTER_FILE)
        model.save_adapter(path)
        logger.info(f"saved the transfer adapter ({os.path.getsize(path) / 1024:.0f} KiB) to "
                    f"{path}")
