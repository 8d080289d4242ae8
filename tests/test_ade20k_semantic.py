"""ADE20K semantic (Mask2Former layout) registration, evaluated by detectron2's SemSegEvaluator.

A two-image tree in the documented layout is written under a temporary DETECTRON2_DATASETS root.
"""
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from PIL import Image

from sine.data.datasets import register_ade20k_semantic
from sine.data.datasets.common import datasets_root
from sine.evaluation.panoptic_sem_seg import load_label_png

NAMES = list(register_ade20k_semantic._PREDEFINED_SPLITS_ADE20K_SEMANTIC)
H, W = 4, 8
# GT: cols 0-3 class 0, cols 4-6 class 5, col 7 unlabelled (255).
GT = np.zeros((H, W), dtype=np.uint8)
GT[:, 4:7] = 5
GT[:, 7] = 255


@pytest.fixture
def ade_root(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        (base / "images" / split).mkdir(parents=True)
        (base / "annotations_detectron2" / split).mkdir(parents=True)
        for i in (1, 2):
            stem = f"{prefix}_{i:08d}"
            Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(
                base / "images" / split / f"{stem}.jpg")
            Image.fromarray(GT).save(base / "annotations_detectron2" / split / f"{stem}.png")
    for name in NAMES:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
    register_ade20k_semantic.register_all_ade20k_semantic(str(tmp_path))
    yield tmp_path
    for name in NAMES:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
    register_ade20k_semantic.register_all_ade20k_semantic(datasets_root())


def test_records_pair_images_with_label_pngs(ade_root):
    records = DatasetCatalog.get("ade20k_sem_seg_val_sine")
    assert [os.path.basename(r["file_name"]) for r in records] == [
        "ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]
    assert records[0]["sem_seg_file_name"].endswith(
        os.path.join("annotations_detectron2", "validation", "ADE_val_00000001.png"))
    meta = MetadataCatalog.get("ade20k_sem_seg_train_sine")
    assert len(meta.stuff_classes) == 150 and meta.stuff_classes[0] == "wall"
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255


def test_sem_seg_evaluator_miou_on_registered_split(ade_root):
    """Prediction: class 0 on cols 0-4, class 5 on cols 5-7 (col 7 is unlabelled, not counted).
    Class 0: TP 16, FP 4 -> IoU 0.8. Class 5: TP 8, FN 4 -> IoU 2/3. mIoU = (0.8 + 2/3) / 2."""
    records = DatasetCatalog.get("ade20k_sem_seg_val_sine")
    scores = torch.zeros(150, H, W)
    scores[0, :, :5] = 1
    scores[5, :, 5:] = 1
    evaluator = SemSegEvaluator("ade20k_sem_seg_val_sine", distributed=False,
                                sem_seg_loading_fn=load_label_png)
    evaluator.reset()
    for r in records:
        evaluator.process([{"file_name": r["file_name"]}], [{"sem_seg": scores}])
    result = evaluator.evaluate()["sem_seg"]
    assert result["mIoU"] == pytest.approx(100 * (0.8 + 2 / 3) / 2)
    assert result["IoU-wall"] == pytest.approx(80.0)


def test_missing_label_folder_points_to_readme(tmp_path):
    (tmp_path / "ADEChallengeData2016/images/validation").mkdir(parents=True)
    register_ade20k_semantic.register_ade20k_semantic(
        "_test_ade_sem_missing", str(tmp_path / "ADEChallengeData2016/images/validation"),
        str(tmp_path / "ADEChallengeData2016/annotations_detectron2/validation"))
    try:
        with pytest.raises(FileNotFoundError, match=r"annotations_detectron2.*#ade20k-semantic"):
            DatasetCatalog.get("_test_ade_sem_missing")
    finally:
        DatasetCatalog.pop("_test_ade_sem_missing", None)
        MetadataCatalog.pop("_test_ade_sem_missing", None)
