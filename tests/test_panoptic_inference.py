"""Panoptic inference from instance + semantic outputs (sine.modeling.panoptic_inference), and its
PQ through detectron2's COCOPanopticEvaluator, against values worked out by hand.

10x10 image; contiguous classes 0 = thing "a", 1 = stuff "b", 2 = stuff "c" (dataset ids 1-3).
Instances (score, rows, cols): i0 a 0.9 r0-4 c0-4; i1 a 0.8 r0-4 c3-7 (10 of its 25 px under i0:
free 15 < 0.8 * 25, dropped); i2 a 0.7 r5-9 c0-1; i3 a 0.3 (below 0.5, dropped); i4 class b 0.95
(not a thing, ignored). Best semantic class: rows 0-4 -> b, except cols 8-9 -> a (a thing no
instance covers: void); rows 5-9 -> c.
Expected segments: 1 = i0 (25 px), 2 = i2 (10 px), 3 = b on r0-4 c5-7 (15 px), 4 = c on r5-9 c2-9.
"""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.structures import Instances

from sine.modeling.panoptic_inference import panoptic_inference

HW = (10, 10)


def _box(r0, r1, c0, c1):
    m = torch.zeros(HW, dtype=torch.bool)
    m[r0:r1 + 1, c0:c1 + 1] = True
    return m


def _case():
    inst = Instances(HW)
    inst.pred_masks = torch.stack([_box(0, 4, 0, 4), _box(0, 4, 3, 7), _box(5, 9, 0, 1),
                                   _box(5, 9, 5, 9), _box(0, 9, 0, 9)])
    inst.scores = torch.tensor([0.9, 0.8, 0.7, 0.3, 0.95])
    inst.pred_classes = torch.tensor([0, 0, 0, 0, 1])
    sem = torch.zeros(3, *HW)
    sem[1, :5] = 1
    sem[0, :5, 8:] = 2
    sem[2, 5:] = 1
    return inst, sem, torch.tensor([0, 1, 2])


def test_panoptic_rule_on_hand_made_case():
    pan, segments = panoptic_inference(*_case(), thing_classes=[0])
    expected = torch.zeros(HW, dtype=torch.int32)
    expected[_box(5, 9, 2, 9)] = 4
    expected[_box(0, 4, 5, 7)] = 3
    expected[_box(5, 9, 0, 1)] = 2
    expected[_box(0, 4, 0, 4)] = 1
    assert torch.equal(pan, expected)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in segments] == [
        (1, 0, True), (2, 0, True), (3, 1, False), (4, 2, False)]
    assert segments[2]["area"] == 15 and segments[0]["score"] == pytest.approx(0.9)


def test_small_stuff_segments_are_dropped():
    pan, segments = panoptic_inference(*_case(), thing_classes=[0], stuff_area_thresh=20)
    assert [s["category_id"] for s in segments] == [0, 0, 2]
    assert int((pan == 0).sum()) == 15 + 10  # the dropped "b" segment and the uncovered thing


def test_mismatched_inputs_are_rejected():
    inst, sem, classes = _case()
    with pytest.raises(ValueError, match="sem_seg_classes"):
        panoptic_inference(inst, sem, classes[:2], thing_classes=[0])


def _write_gt(tmp_path):
    """GT: a r0-4 c0-4 (id 1), a r5-9 c0-3 (id 2), b r0-4 c5-9 (id 3), c r5-9 c4-9 (id 4)."""
    from PIL import Image

    ids = np.zeros(HW, dtype=np.int64)
    ids[5:, 4:] = 4
    ids[:5, 5:] = 3
    ids[5:, :4] = 2
    ids[:5, :5] = 1
    folder = tmp_path / "gt"
    folder.mkdir()
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "001.png")
    cats = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0},
            {"id": 3, "name": "c", "isthing": 0}]
    segs = [{"id": i, "category_id": c, "iscrowd": 0, "area": int((ids == i).sum())}
            for i, c in ((1, 1), (2, 1), (3, 2), (4, 3))]
    with open(tmp_path / "gt.json", "w") as f:
        json.dump({"images": [{"id": 1, "file_name": "001.jpg", "height": 10, "width": 10}],
                   "annotations": [{"image_id": 1, "file_name": "001.png",
                                    "segments_info": segs}],
                   "categories": cats}, f)
    return str(folder), str(tmp_path / "gt.json")


def test_pq_of_the_combined_output(tmp_path):
    """a: i0 matches GT 1 (IoU 1); i2 vs GT 2 has IoU 10/20 = 0.5, not > 0.5: FP and FN
    -> PQ_a = 1 / (1 + 0.5 + 0.5) = 0.5. b: IoU 15/25 = 0.6. c: pred 40 px (10 on GT 2),
    GT 30 px, intersection 30 -> IoU 0.75. PQ = (0.5 + 0.6 + 0.75) / 3; PQ_st = 0.675."""
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOPanopticEvaluator

    gt_folder, gt_json = _write_gt(tmp_path)
    name = "_test_panoptic_inference_case"
    MetadataCatalog.pop(name, None)
    MetadataCatalog.get(name).set(panoptic_root=gt_folder, panoptic_json=gt_json,
                                  thing_dataset_id_to_contiguous_id={1: 0},
                                  stuff_dataset_id_to_contiguous_id={2: 1, 3: 2})
    try:
        evaluator = COCOPanopticEvaluator(name, os.path.join(tmp_path, "out"))
        evaluator.reset()
        evaluator.process([{"image_id": 1, "file_name": "001.jpg"}],
                          [{"panoptic_seg": panoptic_inference(*_case(), thing_classes=[0])}])
        res = evaluator.evaluate()["panoptic_seg"]
    finally:
        MetadataCatalog.pop(name, None)
    assert res["PQ_th"] == pytest.approx(50.0)
    assert res["PQ_st"] == pytest.approx(100 * (0.6 + 0.75) / 2)
    assert res["PQ"] == pytest.approx(100 * (0.5 + 0.6 + 0.75) / 3)
