"""Test loaders and evaluators, dispatched on the dataset's ``evaluator_type``."""
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader

from ..data.fss_episodes import FSSEpisodeMapper

__all__ = ["build_sine_test_loader", "build_sine_evaluator"]


def _evaluator_type(dataset_name):
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type is None:
        raise ValueError(
            f"dataset '{dataset_name}' has no evaluator_type in its metadata; SINE evaluates "
            "'fss' episode datasets (see sine/data/fss_episodes.py::register_fss_episodes) and, "
            "with the LoRA transfer model, 'sem_seg' and panoptic datasets"
        )
    return evaluator_type


# Dense-prediction datasets evaluated with the LoRA transfer model (MODEL.TRANSFER).
_PANOPTIC_TYPES = ("coco_panoptic_seg", "ade20k_panoptic_seg")
_TRANSFER_TYPES = ("sem_seg",) + _PANOPTIC_TYPES


def build_sine_test_loader(cfg, dataset_name):
    evaluator_type = _evaluator_type(dataset_name)
    if evaluator_type == "fss":
        return build_detection_test_loader(
            DatasetCatalog.get(dataset_name), mapper=FSSEpisodeMapper(cfg)
        )
    if evaluator_type in _TRANSFER_TYPES:
        from ..data.dataset_mappers.transfer_mapper import TransferTestMapper

        return build_detection_test_loader(
            DatasetCatalog.get(dataset_name), mapper=TransferTestMapper(cfg)
        )
    raise NotImplementedError(f"no SINE test loader for evaluator_type '{evaluator_type}'")


def build_sine_evaluator(cfg, dataset_name, output_folder=None):
    evaluator_type = _evaluator_type(dataset_name)
    if evaluator_type == "fss":
        from .fss_evaluation import FSSEvaluator

        return FSSEvaluator(
            dataset_name, threshold=cfg.MODEL.SINE.TEST.SEM_SEG_THRESH, output_dir=output_folder
        )
    if evaluator_type == "sem_seg":
        from detectron2.evaluation import SemSegEvaluator

        from .panoptic_sem_seg import load_label_png

        return SemSegEvaluator(dataset_name, output_dir=output_folder,
                               sem_seg_loading_fn=load_label_png)
    if evaluator_type in _PANOPTIC_TYPES:
        from detectron2.evaluation import COCOPanopticEvaluator, DatasetEvaluators

        from .panoptic_sem_seg import PanopticSemSegEvaluator

        panoptic = COCOPanopticEvaluator(dataset_name, output_folder)
        if MetadataCatalog.get(dataset_name).get("sem_seg_root", None) is None:
            return panoptic
        # Semantic labels next to the panoptic ones (as Mask2Former's ADE20K panoptic): mIoU
        # from the same predictions.
        return DatasetEvaluators([panoptic, PanopticSemSegEvaluator(dataset_name)])
    raise NotImplementedError(f"no SINE evaluator for evaluator_type '{evaluator_type}'")
