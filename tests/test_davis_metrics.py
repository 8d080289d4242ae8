"""DAVIS J&F metrics on hand-worked cases (expected values derived in the comments)."""
import csv
import os

import numpy as np
import pytest
from PIL import Image

from sine.evaluation.davis_metrics import (
    DAVISEvaluation,
    boundary_radius,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    disk,
    evaluate_sequence,
    seg2bmap,
    summarize,
)


def square(size, top, left, side):
    mask = np.zeros(size, dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def left_columns(width, size=(100, 100)):
    """Mask whose columns < width are foreground (full height)."""
    mask = np.zeros(size, dtype=bool)
    mask[:, :width] = True
    return mask


# ----------------------------------------------------------------------------- J
def test_iou_empty_cases_follow_toolkit():
    empty = np.zeros((8, 8), bool)
    full = square((8, 8), 2, 2, 3)
    assert db_eval_iou(full, empty) == 0.0  # empty prediction: 0 / 9
    assert db_eval_iou(empty, full) == 0.0  # empty ground truth: 0 / 9
    assert db_eval_iou(empty, empty) == 1.0  # both empty: union 0 -> 1 by convention


def test_iou_one_pixel_and_shifted_square():
    one = square((8, 8), 4, 4, 1)
    assert db_eval_iou(one, one) == 1.0
    assert db_eval_iou(one, square((8, 8), 4, 5, 1)) == 0.0
    # 4x4 square shifted one column: intersection 4x3 = 12, union 16 + 16 - 12 = 20.
    gt, pred = square((10, 10), 2, 2, 4), square((10, 10), 2, 3, 4)
    assert db_eval_iou(gt, pred) == pytest.approx(12 / 20)


def test_iou_per_frame_on_stacks():
    gt = np.stack([square((8, 8), 0, 0, 2), np.zeros((8, 8), bool)])
    pred = np.stack([square((8, 8), 0, 0, 2), np.zeros((8, 8), bool)])
    np.testing.assert_array_equal(db_eval_iou(gt, pred), [1.0, 1.0])


# ----------------------------------------------------------------------------- F
def test_seg2bmap_ring_of_two_by_two_square():
    # A pixel is boundary if it differs from its right, bottom or bottom-right neighbour;
    # last row compares right only, last column bottom only. For a 2x2 square at (1,1):
    # (0,0) differs from bottom-right, (0,1),(0,2) from bottom, (1,0),(2,0) from right,
    # (1,2),(2,2) from right, (2,1) from bottom; (1,1) equals all three neighbours.
    seg = square((4, 4), 1, 1, 2)
    expected = np.array([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)
    assert not seg2bmap(np.ones((5, 5), bool)).any()  # full mask: no boundary at the border


def test_disk_matches_skimage_definition():
    # x^2 + y^2 <= 4 on a 5x5 grid.
    expected = np.array(
        [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
    )
    np.testing.assert_array_equal(disk(2), expected)
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def test_boundary_radius():
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.6) = ceil(7.84)
    assert boundary_radius((100, 100)) == 2  # ceil(0.008 * 141.4) = ceil(1.13)
    assert boundary_radius((10, 10)) == 1  # ceil(0.113)
    assert boundary_radius((100, 100), bound_th=3) == 3  # >= 1: already in pixels


def test_boundary_empty_cases_follow_toolkit():
    empty = np.zeros((100, 100), bool)
    obj = square((100, 100), 10, 10, 20)
    assert db_eval_boundary(obj, empty) == 0.0  # P = 1, R = 0
    assert db_eval_boundary(empty, obj) == 0.0  # P = 0, R = 1
    assert db_eval_boundary(empty, empty) == 1.0  # P = R = 1


@pytest.mark.parametrize("shift, expected", [(0, 1.0), (2, 1.0), (3, 0.0)])
def test_boundary_shift_against_tolerance(shift, expected):
    # Half-plane masks: the only boundary is column width-1 (100 px). On 100x100 the
    # tolerance disk has radius 2, so a boundary moved by <= 2 columns matches fully
    # (P = R = 1) and by 3 columns not at all (P = R = 0).
    gt = left_columns(5)
    pred = left_columns(5 + shift)
    assert db_eval_boundary(gt, pred) == pytest.approx(expected)


def test_boundary_partial_precision():
    # Prediction = GT (columns 0-4) + an extra stripe at columns 50-59. Prediction boundary:
    # column 4, column 49 (right neighbour inside) and column 59: 300 px, of which only
    # column 4 is near the GT -> P = 1/3; the GT boundary (column 4) is fully matched -> R = 1.
    # F = 2 * (1/3) * 1 / (4/3) = 0.5. J = 500 / 1500.
    gt = left_columns(5)
    pred = gt.copy()
    pred[:, 50:60] = True
    assert db_eval_boundary(gt, pred) == pytest.approx(0.5)
    assert db_eval_iou(gt, pred) == pytest.approx(1 / 3)


def test_one_pixel_object_boundary_tolerates_small_shift():
    # A single pixel at (5,5) has 4 boundary pixels {(4,4),(4,5),(5,4),(5,5)}; moved to (6,6)
    # its boundary is {(5,5),(5,6),(6,5),(6,6)}. Every pixel of each lies within the radius-2
    # disk of the other -> F = 1, while the masks do not overlap -> J = 0.
    gt, pred = square((100, 100), 5, 5, 1), square((100, 100), 6, 6, 1)
    assert db_eval_boundary(gt, pred) == 1.0
    assert db_eval_iou(gt, pred) == 0.0


# ----------------------------------------------------------------------------- statistics
def test_statistics_mean_recall_decay():
    # T = 8: ids = round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7]; first bin v[0:3], last v[5:8].
    values = [1.0, 1.0, 1.0, 0.8, 0.5, 0.4, 0.2, 0.0]
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(4.9 / 8)
    assert recall == pytest.approx(4 / 8)  # 0.5 is not > 0.5
    assert decay == pytest.approx(1.0 - 0.2)  # mean(1,1,1) - mean(0.4,0.2,0)


# ----------------------------------------------------------------------------- sequences
def _sequence():
    """4 frames 10x10, two objects in the first GT frame."""
    gt = np.zeros((4, 10, 10), np.int64)
    gt[:, 1:4, 1:4] = 1
    gt[:, 6:9, 6:9] = 2
    return gt


def test_first_and_last_frames_are_excluded_and_missing_objects_score_zero():
    gt = _sequence()
    pred = np.zeros_like(gt)
    pred[1:3, 1:4, 1:4] = 1  # object 1 perfect on frames 1-2, empty on frames 0 and 3
    # object 2 never predicted: empty prediction against a non-empty GT -> J = F = 0.
    j, f = evaluate_sequence(gt, pred)
    np.testing.assert_array_equal(j, [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(f, [[1.0, 1.0], [0.0, 0.0]])
    j_all, _ = evaluate_sequence(gt, pred, exclude_first_last=False)
    np.testing.assert_array_equal(j_all[0], [0.0, 1.0, 1.0, 0.0])


def test_objects_come_from_first_frame_and_void_is_background():
    gt = _sequence()
    gt[2, 0, :] = 255  # void row: background for the semi-supervised protocol
    gt[2, 9, 0] = 3  # object 3 is not in the first frame: not evaluated
    j, _ = evaluate_sequence(gt, np.where(gt > 2, 0, gt))
    assert j.shape == (2, 2)
    np.testing.assert_array_equal(j, 1.0)


def test_unknown_predicted_label_is_an_error():
    gt = _sequence()
    pred = gt.copy()
    pred[1, 0, 0] = 3
    with pytest.raises(ValueError, match="larger than the 2 objects"):
        evaluate_sequence(gt, pred)


def test_summarize_global_mean_over_objects():
    per_sequence = {
        "a": (np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])),
        "b": (np.array([[0.5, 0.5]]), np.array([[1.0, 1.0]])),
    }
    tables = summarize(per_sequence)
    # J-Mean = (1 + 0 + 0.5) / 3 = 0.5, F-Mean = (1 + 0 + 1) / 3 = 2/3.
    assert tables["global"]["J-Mean"] == pytest.approx(0.5)
    assert tables["global"]["F-Mean"] == pytest.approx(2 / 3)
    assert tables["global"]["J&F-Mean"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert tables["global"]["J-Recall"] == pytest.approx(1 / 3)  # only a_1 has J > 0.5
    assert list(tables["per_object"]) == ["a_1", "a_2", "b_1"]


# ----------------------------------------------------------------------------- folders
def _save_palette(path, labels):
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path)


def test_davis_evaluation_reads_folders_and_writes_csv(tmp_path):
    root, results = tmp_path / "DAVIS", tmp_path / "results"
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("seq\n")
    gt = _sequence()
    for t, frame in enumerate(gt):
        _save_palette(str(root / "Annotations" / "480p" / "seq" / f"{t:05d}.png"), frame)
    pred = gt.copy()
    pred[:, 6:9, 6:9] = 0  # object 2 missing everywhere
    for t in (1, 2):  # first/last frames need no result file
        _save_palette(str(results / "seq" / f"{t:05d}.png"), pred[t])

    tables = DAVISEvaluation(str(root)).evaluate(str(results), output_dir=str(results))
    # object 1 perfect (J = F = 1), object 2 empty (J = F = 0) -> every mean is 0.5.
    assert tables["global"]["J&F-Mean"] == pytest.approx(0.5)
    assert tables["per_object"]["seq_1"] == {"J-Mean": 1.0, "F-Mean": 1.0}
    with open(results / "global_results-val.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][0] == "J&F-Mean" and rows[1][0] == "0.500"
    with open(results / "per-sequence_results-val.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[1:] == [["seq_1", "1.000", "1.000"], ["seq_2", "0.000", "0.000"]]


def test_davis_evaluation_missing_result_names_the_file(tmp_path):
    root = tmp_path / "DAVIS"
    for t, frame in enumerate(_sequence()):
        _save_palette(str(root / "Annotations" / "480p" / "seq" / f"{t:05d}.png"), frame)
    evaluation = DAVISEvaluation(str(root), sequences=["seq"])
    with pytest.raises(FileNotFoundError, match="00001.png"):
        evaluation.evaluate(str(tmp_path / "results"))
