"""The installed ``panopticapi`` is the real PQ code: its PQ equals PQ worked out by hand.

``tools/install_panopticapi.py`` installs a registry re-distribution of panopticapi when the
official source cannot be reached; these cases pin what the official ``pq_compute`` computes
(IoU > 0.5 matching, VOID pixels removed from the union, predictions mostly on VOID ignored),
and check that detectron2's ``COCOPanopticEvaluator`` runs on top of it.

Categories: 1 = thing "a", 2 = stuff "b". Two 10x10 images (row, column ranges inclusive):

image 1  GT : s1 a rows 0-4 cols 0-4 (25 px), s2 a rows 0-4 cols 5-9 (25), s3 b rows 5-9 (50)
         pred: p1 a rows 0-4 cols 0-3 (20)       -> IoU 20/25 = 0.8 with s1: TP
               p2 a rows 0-4 cols 4-9 (30)       -> IoU 25/30 with s2: TP
               p3 b rows 5-9 cols 0-4 (25)       -> IoU 25/50 = 0.5, not > 0.5: FP, and s3 FN
               rows 5-9 cols 5-9: VOID
image 2  GT : s1 a cols 0-4 (50 px), cols 5-9 VOID
         pred: p1 a cols 0-6 (70)  -> 20 px on VOID leave the union: IoU 50/50 = 1: TP
               p2 b cols 7-9 (30)  -> entirely on VOID: ignored (no FP)

things: TP 3, IoU sum 0.8 + 5/6 + 1 -> PQ = SQ = (0.8 + 5/6 + 1) / 3, RQ = 1
stuff : TP 0, FP 1, FN 1 -> PQ = SQ = RQ = 0
all   : mean over the 2 categories
"""
import json
import os

import numpy as np
import pytest

# No skip when panopticapi is missing: tools/install_deps.py installs it, and a PQ evaluation that
# silently does not run is what these tests exist to catch.

HW = (10, 10)
CATEGORIES = [
    {"id": 1, "name": "a", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "b", "isthing": 0, "color": [0, 0, 142]},
]
PQ_THINGS = (0.8 + 5 / 6 + 1.0) / 3
PQ_STUFF = 0.0
PQ_ALL = (PQ_THINGS + PQ_STUFF) / 2


def _segments(boxes):
    """{segment id: (category, rows slice, cols slice)} -> (H, W) int id map."""
    ids = np.zeros(HW, dtype=np.int64)
    for seg_id, (_, rows, cols) in boxes.items():
        ids[rows, cols] = seg_id
    return ids


GT = {
    1: {1: (1, slice(0, 5), slice(0, 5)), 2: (1, slice(0, 5), slice(5, 10)),
        3: (2, slice(5, 10), slice(0, 10))},
    2: {1: (1, slice(0, 10), slice(0, 5))},
}
PRED = {
    1: {1: (1, slice(0, 5), slice(0, 4)), 2: (1, slice(0, 5), slice(4, 10)),
        3: (2, slice(5, 10), slice(0, 5))},
    2: {1: (1, slice(0, 10), slice(0, 7)), 2: (2, slice(0, 10), slice(7, 10))},
}


def _write_png(path, ids):
    """RGB-encoded segment ids (id = R + 256 G + 256^2 B), the COCO panoptic format."""
    from PIL import Image

    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def _write_set(folder, json_path, table):
    os.makedirs(folder, exist_ok=True)
    annotations = []
    for image_id, boxes in table.items():
        ids = _segments(boxes)
        name = f"{image_id:03d}.png"
        _write_png(os.path.join(folder, name), ids)
        annotations.append({
            "image_id": image_id, "file_name": name,
            "segments_info": [{"id": s, "category_id": c, "iscrowd": 0,
                               "area": int((ids == s).sum())}
                              for s, (c, _, _) in boxes.items()]})
    images = [{"id": i, "file_name": f"{i:03d}.jpg", "height": HW[0], "width": HW[1]}
              for i in table]
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)


@pytest.fixture
def gt_set(tmp_path):
    folder, json_path = str(tmp_path / "gt"), str(tmp_path / "gt.json")
    _write_set(folder, json_path, GT)
    return folder, json_path


def test_pq_compute_equals_hand_computed_pq(gt_set, tmp_path):
    from panopticapi.evaluation import pq_compute

    pred_folder, pred_json = str(tmp_path / "pred"), str(tmp_path / "pred.json")
    _write_set(pred_folder, pred_json, PRED)
    res = pq_compute(gt_set[1], pred_json, gt_folder=gt_set[0], pred_folder=pred_folder)
    assert res["Things"]["pq"] == pytest.approx(PQ_THINGS)
    assert res["Things"]["sq"] == pytest.approx(PQ_THINGS)
    assert res["Things"]["rq"] == pytest.approx(1.0)
    assert res["Stuff"]["pq"] == pytest.approx(PQ_STUFF)
    assert res["Stuff"]["n"] == 1
    assert res["All"]["pq"] == pytest.approx(PQ_ALL)


def test_pq_compute_perfect_prediction_is_one(gt_set, tmp_path):
    from panopticapi.evaluation import pq_compute

    pred_folder, pred_json = str(tmp_path / "pred"), str(tmp_path / "pred.json")
    _write_set(pred_folder, pred_json, GT)
    res = pq_compute(gt_set[1], pred_json, gt_folder=gt_set[0], pred_folder=pred_folder)
    assert res["All"]["pq"] == pytest.approx(1.0)


def test_coco_panoptic_evaluator_runs_on_panopticapi(gt_set, tmp_path):
    """detectron2's evaluator, fed contiguous ids with ``isthing``, reports the same PQ (x100)."""
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOPanopticEvaluator

    name = "_test_pq_hand_case"
    MetadataCatalog.pop(name, None)
    MetadataCatalog.get(name).set(
        panoptic_root=gt_set[0], panoptic_json=gt_set[1],
        thing_dataset_id_to_contiguous_id={1: 0}, stuff_dataset_id_to_contiguous_id={2: 1})
    try:
        evaluator = COCOPanopticEvaluator(name, str(tmp_path / "eval"))
        evaluator.reset()
        for image_id, boxes in PRED.items():
            ids = torch.as_tensor(_segments(boxes), dtype=torch.int32)
            info = [{"id": s, "category_id": 0 if c == 1 else 1, "isthing": c == 1}
                    for s, (c, _, _) in boxes.items()]
            evaluator.process([{"image_id": image_id, "file_name": f"{image_id:03d}.jpg"}],
                              [{"panoptic_seg": (ids, info)}])
        res = evaluator.evaluate()["panoptic_seg"]
    finally:
        MetadataCatalog.pop(name, None)
    assert res["PQ"] == pytest.approx(100 * PQ_ALL)
    assert res["PQ_th"] == pytest.approx(100 * PQ_THINGS)
    assert res["PQ_st"] == pytest.approx(100 * PQ_STUFF)


def test_installer_rewrites_the_registry_wheel_requirements(tmp_path):
    """The registry wheel's numpy<2 / scikit-image / matplotlib requirements are replaced by
    what panopticapi imports, with every RECORD hash still true (pip verifies them)."""
    import base64
    import hashlib
    import importlib.util
    import zipfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "install_panopticapi", os.path.join(root, "tools", "install_panopticapi.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = tmp_path / "panopticapi_lite-0.2.0-py3-none-any.whl"
    meta = ("Metadata-Version: 2.4\nName: panopticapi-lite\nVersion: 0.2.0\n"
            "Requires-Dist: matplotlib>=3.7.5\nRequires-Dist: numpy<2.0.0,>=1.23.5\n"
            "Requires-Dist: scikit-image>=0.21.0\n\n# README\n")
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("panopticapi/evaluation.py", "OFFSET = 256 * 256 * 256\n")
        z.writestr("panopticapi_lite-0.2.0.dist-info/METADATA", meta)
        z.writestr("panopticapi_lite-0.2.0.dist-info/RECORD", "")
    out = tmp_path / "out"
    out.mkdir()
    with zipfile.ZipFile(tool.rewrite_requirements(str(src), str(out))) as z:
        metadata = z.read("panopticapi_lite-0.2.0.dist-info/METADATA").decode()
        record = z.read("panopticapi_lite-0.2.0.dist-info/RECORD").decode().splitlines()
        contents = {n: z.read(n) for n in z.namelist()}
    requires = [ln for ln in metadata.splitlines() if ln.startswith("Requires-Dist:")]
    assert requires == ["Requires-Dist: numpy", "Requires-Dist: Pillow"]
    assert metadata.endswith("\n\n# README\n")  # the description is kept after the header
    for line in record:
        name, digest, size = line.split(",")
        if not name.endswith("RECORD"):
            data = contents[name]
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert (digest, int(size)) == (f"sha256={expected.decode()}", len(data))
