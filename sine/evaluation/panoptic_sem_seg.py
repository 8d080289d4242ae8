"""mIoU of a panoptic dataset that also has semantic label PNGs."""
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["PanopticSemSegEvaluator", "load_label_png"]


def load_label_png(path, dtype=int):
    """(H, W) labels of a PNG. detectron2's default loader passes ``copy=False`` to
    ``np.array``, which NumPy 2 rejects for PIL images; this one works with both."""
    with PathManager.open(path, "rb") as f:
        return np.asarray(Image.open(f), dtype=dtype).copy()


class PanopticSemSegEvaluator(SemSegEvaluator):
    """detectron2's ``SemSegEvaluator`` on a dataset with detectron2's standard panoptic
    metadata, whose contiguous classes are split over ``thing_dataset_id_to_contiguous_id`` and
    ``stuff_dataset_id_to_contiguous_id``: the prediction JSON maps every contiguous class back
    to its dataset id through both (``SemSegEvaluator`` alone only knows the stuff map)."""

    def __init__(self, dataset_name, output_dir=None, **kwargs):
        kwargs.setdefault("sem_seg_loading_fn", load_label_png)
        super().__init__(dataset_name, distributed=True, output_dir=output_dir, **kwargs)
        meta = MetadataCatalog.get(dataset_name)
        both = {**meta.thing_dataset_id_to_contiguous_id,
                **meta.stuff_dataset_id_to_contiguous_id}
        self._contiguous_id_to_dataset_id = {v: k for k, v in both.items()}
