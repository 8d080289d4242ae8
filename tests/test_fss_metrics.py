"""FSS mIoU / FB-IoU on hand-worked episodes (expected values derived in the comments)."""
import json

import numpy as np
import pytest
import torch

from sine.evaluation.fss_evaluation import (
    FSSEvaluator,
    accumulate_fss,
    episode_intersection_union,
    fss_scores,
)

# Episode A: gt [1,1,0,0], pred [1,0,0,0]
#   fg: inter 1, pred 1 + gt 2 - 1 -> union 2;  bg: inter 2, pred 3 + gt 2 - 2 -> union 3.
EP_A = (np.array([[1, 0, 0, 0]]), np.array([[1, 1, 0, 0]]))
# Episode B: gt [1,1,1,0], pred [1,1,1,1]
#   fg: inter 3, union 4 + 3 - 3 = 4;  bg: inter 0, union 0 + 1 - 0 = 1.
EP_B = (np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 0]]))


def test_episode_counts_exclude_ignore_label():
    gt = np.array([[0, 1, 1], [0, 255, 1]])
    pred = np.array([[1, 1, 0], [0, 1, 1]])
    # Pixel (1,1) is ignored in both. fg: inter {(0,1),(1,2)} = 2, pred 3, gt 3 -> union 4.
    # bg: pred {(0,2),(1,0)}, gt {(0,0),(1,0)}, inter {(1,0)} = 1 -> union 3.
    inter, union = episode_intersection_union(pred, gt)
    np.testing.assert_array_equal(inter, [1, 2])
    np.testing.assert_array_equal(union, [3, 4])


def test_episode_a_and_b_counts():
    np.testing.assert_array_equal(episode_intersection_union(*EP_A), ([2, 1], [3, 2]))
    np.testing.assert_array_equal(episode_intersection_union(*EP_B), ([0, 3], [1, 4]))


def test_same_class_vs_two_classes():
    preds, gts = [EP_A[0], EP_B[0]], [EP_A[1], EP_B[1]]
    # Same class: fg 4/6 -> mIoU 66.67; FB = mean(bg 2/4, fg 4/6) = 58.33.
    same = fss_scores(accumulate_fss(preds, gts, [7, 7]))
    assert same["mIoU"] == pytest.approx(100 * 4 / 6)
    assert same["FB-IoU"] == pytest.approx(100 * (0.5 + 4 / 6) / 2)
    # Two classes: mIoU = mean(1/2, 3/4) = 62.5; FB-IoU pools classes, so it is unchanged.
    two = fss_scores(accumulate_fss(preds, gts, [7, 8]))
    assert two["mIoU"] == pytest.approx(62.5)
    assert two["FB-IoU"] == pytest.approx(same["FB-IoU"])
    assert two["IoU-7"] == pytest.approx(50.0) and two["IoU-8"] == pytest.approx(75.0)


def test_unsampled_fold_class_counts_as_zero():
    totals = accumulate_fss([EP_A[0]], [EP_A[1]], [7])
    # Fold {7, 8, 9}: IoU 1/2, 0, 0 -> mIoU 16.67 (official averages over the fold's classes).
    assert fss_scores(totals, class_ids=[7, 8, 9])["mIoU"] == pytest.approx(50 / 3)


def test_bad_ground_truth_values_and_sizes_are_rejected():
    with pytest.raises(ValueError, match="binary"):
        episode_intersection_union(np.zeros((2, 2)), np.full((2, 2), 2))
    with pytest.raises(ValueError, match="resize the prediction"):
        episode_intersection_union(np.zeros((2, 3)), np.zeros((2, 2)))


def test_evaluator_thresholds_scores_and_accumulates(tmp_path):
    evaluator = FSSEvaluator(threshold=0.7, output_dir=str(tmp_path))
    evaluator.reset()
    # Episode A as scores: only the first pixel is > 0.7 (0.7 itself is background).
    scores_a = torch.tensor([[[0.9, 0.7, 0.1, 0.0]]])  # (C=1, H=1, W=4)
    scores_b = torch.tensor([[1.2, 0.8, 0.71, 5.0]])  # (H, W); scores are not bounded by 1
    gt_b_with_ignore = torch.tensor([[1, 1, 1, 255]])  # last pixel ignored -> fg 3/3, bg 0/0
    inputs = [
        {"sem_seg_gt": torch.as_tensor(EP_A[1]), "class_id": 7},
        {"sem_seg_gt": gt_b_with_ignore, "class_id": 8},
    ]
    evaluator.process(inputs, [{"sem_seg": scores_a}, {"sem_seg": scores_b}])
    results = evaluator.evaluate()["fss"]  # distributed path with a single process
    # IoU-7 = 1/2, IoU-8 = 3/3 -> mIoU 75. FB: bg 2/3, fg (1+3)/(2+3) -> mean 73.33.
    assert results["mIoU"] == pytest.approx(75.0)
    assert results["FB-IoU"] == pytest.approx(100 * (2 / 3 + 4 / 5) / 2)
    saved = json.loads((tmp_path / "fss_results.json").read_text())
    assert saved["counts_bg_fg"]["8"] == {"intersection": [0, 3], "union": [0, 3]}
    evaluator.reset()
    assert evaluator.evaluate() == {}


# 3 x 3 episodes, worked by hand. Per-class IoU divides by max(union, 1), as the HSNet logger.
def test_empty_prediction():
    gt = np.zeros((3, 3), int)
    gt[0, :2] = 1
    pred = np.zeros((3, 3), int)
    # fg: inter 0, union 2 -> IoU 0.  bg: inter 7 (all but the 2 gt pixels), union 9 -> 7/9.
    np.testing.assert_array_equal(episode_intersection_union(pred, gt), ([7, 0], [9, 2]))
    scores = fss_scores(accumulate_fss([pred], [gt], [3]))
    assert scores["mIoU"] == 0.0
    assert scores["FB-IoU"] == pytest.approx(100 * (7 / 9 + 0) / 2)


def test_empty_ground_truth():
    gt = np.zeros((3, 3), int)
    pred = np.zeros((3, 3), int)
    pred[2, 2] = 1
    # fg: inter 0, union 1 (the false positive) -> 0.  bg: inter 8, union 9.
    np.testing.assert_array_equal(episode_intersection_union(pred, gt), ([8, 0], [9, 1]))
    assert fss_scores(accumulate_fss([pred], [gt], [3]))["mIoU"] == 0.0


def test_both_empty():
    empty = np.zeros((3, 3), int)
    # fg: inter 0, union 0 -> 0 / max(0, 1) = 0 (nothing to find counts as 0 for the class, as in
    # the official logger); bg: 9 / 9. FB-IoU pools unions without that guard (official), so a
    # fold whose every episode has an empty foreground has an undefined FB-IoU: NaN, not 50.
    np.testing.assert_array_equal(episode_intersection_union(empty, empty), ([9, 0], [9, 0]))
    scores = fss_scores(accumulate_fss([empty], [empty], [3]))
    assert scores["mIoU"] == 0.0 and np.isnan(scores["FB-IoU"])
    # One non-empty episode of the class defines it again: fg 1 / 1, bg (9 + 8) / (9 + 8).
    gt = empty.copy()
    gt[0, 0] = 1
    scores = fss_scores(accumulate_fss([empty, gt], [empty, gt], [3, 3]))
    assert scores["mIoU"] == pytest.approx(100.0) and scores["FB-IoU"] == pytest.approx(100.0)


def test_one_pixel_object():
    gt = np.zeros((3, 3), int)
    gt[1, 1] = 1
    hit, miss = gt.copy(), np.roll(gt, 1, axis=1)
    # hit: fg 1/1, bg 8/8.  miss: fg inter 0, union 2; bg inter 7, union 9.
    np.testing.assert_array_equal(episode_intersection_union(hit, gt), ([8, 1], [8, 1]))
    np.testing.assert_array_equal(episode_intersection_union(miss, gt), ([7, 0], [9, 2]))
    # Both episodes of one class: fg 1 / 3, bg 15 / 17.
    scores = fss_scores(accumulate_fss([hit, miss], [gt, gt], [3, 3]))
    assert scores["mIoU"] == pytest.approx(100 / 3)
    assert scores["FB-IoU"] == pytest.approx(100 * (15 / 17 + 1 / 3) / 2)
