"""Data side of the LoRA transfer: target-only mappers and the train/test loader dispatch."""
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

from sine.config import get_sine_cfg
from sine.data.build import build_sine_train_loader
from sine.data.dataset_mappers.transfer_mapper import TransferMapper, TransferTestMapper
from sine.evaluation.build import build_sine_evaluator, build_sine_test_loader


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from sine.data.datasets.register_synthetic import register_synthetic
    from sine.data.synthetic import generate_synthetic

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic(root, seed=0, num_train=4, num_val=4, num_videos=0, fewshot_seeds=1,
                       shots=(1,))
    register_synthetic(root)
    return root


def _cfg(*opts):
    return get_sine_cfg(None, ["INPUT.IMAGE_SIZE", "112", "INPUT.MIN_SCALE", "1.0",
                               "INPUT.MAX_SCALE", "1.0", "INPUT.RANDOM_FLIP", "none", *opts])


def test_semantic_record_gives_one_instance_per_class(synthetic_root):
    record = DatasetCatalog.get("synthetic_train_sem_seg")[0]
    labels = np.asarray(Image.open(record["sem_seg_file_name"]))
    out = TransferMapper(_cfg())(record)
    inst = out["instances"]
    assert "references" not in out and out["image"].dtype == torch.uint8
    assert inst.gt_masks.shape[-2:] == out["image"].shape[-2:]
    # Scale 1 then a 112 crop: the classes are those of the crop, each mask one whole class.
    crop_classes = set(inst.gt_classes.tolist())
    assert crop_classes <= set(np.unique(labels).tolist())
    assert torch.equal(inst.ins_ids, inst.gt_classes + 1)
    assert not (inst.gt_masks.sum(0) > 1).any()  # classes do not overlap


def test_panoptic_record_keeps_segments(synthetic_root):
    record = DatasetCatalog.get("synthetic_train_panoptic")[0]
    out = TransferMapper(_cfg("INPUT.IMAGE_SIZE", "400"))(record)  # no crop at this size
    inst = out["instances"]
    assert sorted(inst.ins_ids.tolist()) == sorted(s["id"] for s in record["segments_info"])


def test_test_mapper_resizes_longer_side_and_keeps_output_size(synthetic_root):
    record = DatasetCatalog.get("synthetic_val_sem_seg")[0]
    h, w = np.asarray(Image.open(record["file_name"])).shape[:2]
    out = TransferTestMapper(_cfg())(record)
    assert (out["height"], out["width"]) == (h, w)
    assert max(out["image"].shape[-2:]) == 112


def test_loader_and_evaluator_dispatch(synthetic_root):
    cfg = _cfg("INPUT.DATASET_MAPPER_NAME", "transfer", "DATASETS.TRAIN",
               "('synthetic_train_sem_seg',)", "SOLVER.IMS_PER_BATCH", "2",
               "DATALOADER.NUM_WORKERS", "0")
    batch = next(iter(build_sine_train_loader(cfg)))
    assert len(batch) == 2 and all(len(x["instances"]) > 0 for x in batch)
    assert type(build_sine_evaluator(cfg, "synthetic_val_sem_seg")).__name__ == "SemSegEvaluator"
    # The synthetic panoptic split also has semantic labels: PQ and mIoU from one pass.
    both = build_sine_evaluator(cfg, "synthetic_val_panoptic")
    assert [type(e).__name__ for e in both._evaluators] == ["COCOPanopticEvaluator",
                                                             "PanopticSemSegEvaluator"]
    record = DatasetCatalog.get("synthetic_val_panoptic")[0]
    assert os.path.basename(record["sem_seg_file_name"]) == \
        os.path.basename(record["pan_seg_file_name"])
    first = next(iter(build_sine_test_loader(cfg, "synthetic_val_panoptic")))[0]
    assert max(first["image"].shape[-2:]) == 112
    with pytest.raises(ValueError, match="DATASET_MAPPER_NAME"):
        build_sine_train_loader(_cfg("INPUT.DATASET_MAPPER_NAME", "nope"))
