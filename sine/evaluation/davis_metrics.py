"""J&F metrics of the DAVIS 2017 semi-supervised benchmark (spec §7.3).

A re-implementation with the same behaviour as the public ``davis2017-evaluation`` toolkit
(``evaluation_method.py --task semi-supervised``), which is not available as a package:

* J (region similarity) = IoU of the binary object masks; an empty union counts as 1.
* F (boundary accuracy) = F-measure between the one-pixel boundaries of prediction and ground
  truth, each boundary pixel being matched if it lies within a disk of radius
  ``ceil(bound_th * image_diagonal)`` pixels (8 px at 480p) of the other boundary.
* Per object: mean (M), recall (R, fraction of frames > 0.5) and decay (D, first minus last
  of four overlapping temporal quantiles).
* The first and last frames of every sequence are excluded; the number of objects of a sequence
  is the largest label of its first ground-truth frame; an object absent from the prediction
  counts as an empty prediction; a predicted label larger than the number of objects is an
  error; the void label 255 of the ground truth is treated as background.
* Global J&F = mean of (mean J-M over all objects, mean F-M over all objects).

Known differences from the toolkit, none of which can change a DAVIS number:
* The toolkit casts the decay quantile indices to ``uint8`` (wrong for sequences longer than
  255 frames); here they are plain integers.
* The toolkit prints and exits on bad results; here a ``ValueError``/``FileNotFoundError``
  is raised.
* Only the semi-supervised task is implemented, and frames are listed from the annotation
  folder (the toolkit lists JPEG frames, which are the same files for train/val).
"""
import csv
import logging
import math
import os
from collections import OrderedDict

import cv2
import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "DAVISEvaluation",
    "boundary_radius",
    "db_eval_boundary",
    "db_eval_iou",
    "db_statistics",
    "disk",
    "evaluate_sequence",
    "seg2bmap",
    "summarize",
    "write_csv",
]


def db_eval_iou(gt, pred):
    """Region similarity J.

    Args:
        gt, pred: binary masks of the same shape, (H, W) or (T, H, W).

    Returns:
        float for (H, W) inputs, (T,) array for (T, H, W) inputs. Frames where both masks
        are empty score 1 (toolkit convention); one empty mask scores 0.
    """
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} masks must have the same shape")
    inter = np.sum(gt & pred, axis=(-2, -1))
    union = np.sum(gt | pred, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inter / union
    if j.ndim == 0:
        return 1.0 if union == 0 else float(j)
    j[union == 0] = 1.0
    return j


def seg2bmap(seg):
    """One-pixel-wide boundary map of a binary mask, at the mask's own size.

    A pixel is a boundary pixel if it differs from its right, bottom or bottom-right
    neighbour (pixels beyond the image count as background), except that on the last row
    only the right neighbour and on the last column only the bottom neighbour is compared,
    and the bottom-right corner pixel is never a boundary (toolkit convention).

    Args:
        seg: (H, W) binary mask.

    Returns:
        (H, W) bool boundary map.
    """
    seg = np.asarray(seg).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap expects a (H, W) mask, got shape {seg.shape}")
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    below_right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    below_right[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ below) | (seg ^ below_right)
    bmap[-1, :] = seg[-1, :] ^ right[-1, :]
    bmap[:, -1] = seg[:, -1] ^ below[:, -1]
    bmap[-1, -1] = False
    return bmap


def disk(radius):
    """Disk structuring element, identical to ``skimage.morphology.disk(radius)``.

    Returns:
        (2r+1, 2r+1) uint8 array, 1 where x^2 + y^2 <= r^2 (r an integer radius).
    """
    coords = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(coords, coords)
    return ((xx**2 + yy**2) <= radius**2).astype(np.uint8)


def boundary_radius(image_size, bound_th=0.008):
    """Matching tolerance in pixels: ``bound_th`` itself if >= 1, else
    ``ceil(bound_th * ||(H, W)||)`` (8 for 480x854 DAVIS frames)."""
    if bound_th >= 1:
        return bound_th
    return float(np.ceil(bound_th * np.linalg.norm(image_size)))


def _boundary_f_measure(pred, gt, bound_th):
    """F-measure of one (H, W) frame; see :func:`db_eval_boundary`."""
    radius = boundary_radius(pred.shape, bound_th)
    pred_boundary = seg2bmap(pred)
    gt_boundary = seg2bmap(gt)
    kernel = disk(radius)
    pred_dil = cv2.dilate(pred_boundary.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)

    n_pred = int(pred_boundary.sum())
    n_gt = int(gt_boundary.sum())
    # Toolkit conventions for empty boundaries.
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(pred_boundary & gt_dil) / n_pred
        recall = np.sum(gt_boundary & pred_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(gt, pred, bound_th=0.008):
    """Boundary accuracy F.

    Args:
        gt, pred: binary masks of the same shape, (H, W) or (T, H, W).
        bound_th: tolerance as a fraction of the image diagonal (< 1) or in pixels (>= 1).

    Returns:
        float for (H, W) inputs, (T,) array for (T, H, W) inputs. Both boundaries empty
        scores 1; exactly one empty scores 0.
    """
    gt = np.asarray(gt).astype(bool)
    pred = np.asarray(pred).astype(bool)
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} masks must have the same shape")
    if gt.ndim == 2:
        return _boundary_f_measure(pred, gt, bound_th)
    if gt.ndim == 3:
        return np.array([_boundary_f_measure(p, g, bound_th) for p, g in zip(pred, gt)])
    raise ValueError(f"masks must be (H, W) or (T, H, W), got shape {gt.shape}")


def db_statistics(per_frame_values):
    """Mean, recall and decay of one object's per-frame J or F values.

    Decay uses four overlapping quantiles: with ``ids = round(linspace(1, T, 5)) - 1`` the
    i-th quantile is ``values[ids[i] : ids[i + 1] + 1]``; D = mean(first) - mean(last).

    Returns:
        (M, R, D) floats (nan for an empty sequence).
    """
    values = np.asarray(per_frame_values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def _split_objects(labels, num_objects):
    """(T, H, W) label maps -> (N, T, H, W) bool masks for labels 1..N."""
    ids = np.arange(1, num_objects + 1).reshape(-1, 1, 1, 1)
    return labels[None] == ids


def evaluate_sequence(gt_labels, pred_labels, exclude_first_last=True, bound_th=0.008):
    """Per-object, per-frame J and F of one sequence.

    Args:
        gt_labels: (T, H, W) int ground-truth label maps of every frame of the sequence
            (0 = background, 1..N = objects, 255 = void, treated as background).
        pred_labels: (T, H, W) int predicted label maps of the same frames.
        exclude_first_last: drop the first and last frames (semi-supervised protocol).
        bound_th: see :func:`db_eval_boundary`.

    Returns:
        (J, F): two (N, T') float arrays, N = largest label of the first ground-truth frame,
        T' = T - 2 when excluding the first and last frames.
    """
    gt_labels = np.asarray(gt_labels).astype(np.int64)
    pred_labels = np.asarray(pred_labels).astype(np.int64)
    if gt_labels.ndim != 3 or gt_labels.shape != pred_labels.shape:
        raise ValueError(
            f"gt {gt_labels.shape} and pred {pred_labels.shape} must both be (T, H, W) label "
            "maps of the same frames; resize predictions to the annotation size first"
        )
    gt_labels = np.where(gt_labels == 255, 0, gt_labels)
    num_objects = int(gt_labels[0].max())
    if exclude_first_last:
        gt_labels, pred_labels = gt_labels[1:-1], pred_labels[1:-1]
    max_pred = int(pred_labels.max()) if pred_labels.size else 0
    if max_pred > num_objects:
        raise ValueError(
            f"predicted label {max_pred} is larger than the {num_objects} objects of the first "
            "ground-truth frame; predictions must reuse the annotation's object ids"
        )
    gt_masks = _split_objects(gt_labels, num_objects)
    pred_masks = _split_objects(pred_labels, num_objects)
    num_frames = gt_labels.shape[0]
    j = np.zeros((num_objects, num_frames))
    f = np.zeros((num_objects, num_frames))
    for k in range(num_objects):
        j[k] = db_eval_iou(gt_masks[k], pred_masks[k])
        f[k] = db_eval_boundary(gt_masks[k], pred_masks[k], bound_th)
    return j, f


def summarize(per_sequence):
    """Global and per-object tables from per-sequence J/F arrays.

    Args:
        per_sequence: ordered mapping ``sequence name -> (J (N, T'), F (N, T'))``.

    Returns:
        dict with ``"global"``: OrderedDict of J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean,
        F-Recall, F-Decay (fractions in [0, 1], like the toolkit), and ``"per_object"``:
        OrderedDict ``"<sequence>_<k>" -> {"J-Mean", "F-Mean"}`` (k = object id, 1-based).
    """
    stats = {"J": [], "F": []}
    per_object = OrderedDict()
    for name, (j, f) in per_sequence.items():
        for k in range(j.shape[0]):
            j_stats, f_stats = db_statistics(j[k]), db_statistics(f[k])
            stats["J"].append(j_stats)
            stats["F"].append(f_stats)
            per_object[f"{name}_{k + 1}"] = {"J-Mean": j_stats[0], "F-Mean": f_stats[0]}
    if not per_object:
        raise ValueError("no object to evaluate: every sequence has an empty first annotation")
    j_arr, f_arr = np.array(stats["J"]), np.array(stats["F"])
    global_table = OrderedDict()
    global_table["J&F-Mean"] = float((j_arr[:, 0].mean() + f_arr[:, 0].mean()) / 2)
    for metric, arr in (("J", j_arr), ("F", f_arr)):
        for col, stat in enumerate(("Mean", "Recall", "Decay")):
            global_table[f"{metric}-{stat}"] = float(arr[:, col].mean())
    return {"global": global_table, "per_object": per_object}


def write_csv(tables, output_dir, gt_set="val"):
    """Write ``global_results-<set>.csv`` and ``per-sequence_results-<set>.csv`` (toolkit
    file names and columns, values with 3 decimals). Returns the two paths."""
    os.makedirs(output_dir, exist_ok=True)
    global_path = os.path.join(output_dir, f"global_results-{gt_set}.csv")
    seq_path = os.path.join(output_dir, f"per-sequence_results-{gt_set}.csv")
    with open(global_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(tables["global"].keys()))
        writer.writerow([f"{v:.3f}" for v in tables["global"].values()])
    with open(seq_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Sequence", "J-Mean", "F-Mean"])
        for name, row in tables["per_object"].items():
            writer.writerow([name, f"{row['J-Mean']:.3f}", f"{row['F-Mean']:.3f}"])
    return global_path, seq_path


def _read_label_map(path):
    """Palette (or grey) PNG -> (H, W) int64 label map (palette indices, not colours)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"missing mask {path}: results must hold one indexed PNG per annotated frame, "
            "named like the annotation"
        )
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "1", "I"):
            raise ValueError(f"{path} is a {img.mode} image; save masks as palette PNGs")
        return np.array(img).astype(np.int64)


class DAVISEvaluation:
    """Semi-supervised J&F over a DAVIS-layout dataset.

    Expects ``<davis_root>/ImageSets/<year>/<gt_set>.txt`` (one sequence per line) and
    ``<davis_root>/Annotations/<resolution>/<seq>/<frame>.png``; results are
    ``<results_dir>/<seq>/<frame>.png`` palette PNGs with the same frame names.

    ``year="2016"`` only selects ``ImageSets/2016``; it does not reproduce any DAVIS-2016
    specific mask handling (unknown for the official bundled toolkit, see spec §7.3).
    """

    def __init__(self, davis_root, gt_set="val", year="2017", sequences="all",
                 resolution="480p", bound_th=0.008):
        self.davis_root = davis_root
        self.gt_set = gt_set
        self.bound_th = bound_th
        self.mask_dir = os.path.join(davis_root, "Annotations", resolution)
        if sequences == "all":
            list_file = os.path.join(davis_root, "ImageSets", str(year), f"{gt_set}.txt")
            if not os.path.isfile(list_file):
                raise FileNotFoundError(f"sequence list {list_file} not found; check davis_root")
            with open(list_file) as fh:
                sequences = [line.strip() for line in fh if line.strip()]
        elif isinstance(sequences, str):
            sequences = [sequences]
        self.sequences = list(sequences)

    def _frames(self, seq):
        seq_dir = os.path.join(self.mask_dir, seq)
        frames = sorted(f[:-4] for f in os.listdir(seq_dir) if f.endswith(".png"))
        if not frames:
            raise FileNotFoundError(f"no annotation PNGs in {seq_dir}")
        return frames

    def evaluate_sequence(self, seq, results_dir):
        """(J, F) arrays of one sequence, each (N, T - 2)."""
        frames = self._frames(seq)
        gt = np.stack([_read_label_map(os.path.join(self.mask_dir, seq, f"{f}.png"))
                       for f in frames])
        pred = np.zeros_like(gt)
        # The first and last frames are excluded: their results need not exist.
        for t, frame in enumerate(frames[1:-1], start=1):
            pred[t] = self._read_result(results_dir, seq, frame, gt.shape[1:])
        return evaluate_sequence(gt, pred, exclude_first_last=True, bound_th=self.bound_th)

    @staticmethod
    def _read_result(results_dir, seq, frame, shape):
        mask = _read_label_map(os.path.join(results_dir, seq, f"{frame}.png"))
        if mask.shape != tuple(shape):
            raise ValueError(
                f"result {seq}/{frame}.png is {mask.shape}, annotation is {tuple(shape)}; "
                "save results at the annotation resolution"
            )
        return mask

    def evaluate(self, results_dir, output_dir=None):
        """Evaluate every sequence; optionally write the toolkit's two CSV files.

        Returns:
            dict from :func:`summarize` plus ``"per_sequence"``: name -> (J, F) arrays.
        """
        per_sequence = OrderedDict()
        for seq in self.sequences:
            per_sequence[seq] = self.evaluate_sequence(seq, results_dir)
        tables = summarize(per_sequence)
        tables["per_sequence"] = per_sequence
        g = tables["global"]
        logger.info(
            "DAVIS %s: J&F %.3f  J %.3f  F %.3f", self.gt_set, g["J&F-Mean"], g["J-Mean"],
            g["F-Mean"],
        )
        if output_dir is not None:
            write_csv(tables, output_dir, self.gt_set)
        return tables
