"""PASCAL-Part one-shot part segmentation (Matcher's protocol) on a generated tree in the
documented layout (datasets/README.md#pascal-part): class list, episodes, object-box crops,
and the per-super-category metric."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from inference_fss.benchmarks import pascal_part_classes, register_fss_benchmark
from sine.data.fss_episodes import FSSEpisodeMapper
from sine.evaluation.fss_evaluation import accumulate_fss, fss_scores

H, W = 40, 60


def _rle(box):
    x0, y0, x1, y1 = box
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _object(name, box, parts):
    return {"name": name, "bndbox": dict(zip(("xmin", "ymin", "xmax", "ymax"), box)),
            "parts": [{"name": p, "mask": [_rle(b)]} for p, b in parts]}


@pytest.fixture
def part_root(tmp_path):
    base = tmp_path / "Pascal-Part" / "VOCdevkit" / "VOC2010"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "Annotations_Part_json_merged_part_classes").mkdir()
    images = {
        # A cat at x 10-50, y 5-35 with a HEAD (top-left 10x10) and a LEG (bottom strip).
        f"2008_{i:06d}": [_object("cat", (10, 5, 50, 35), [("HEAD", (10, 5, 20, 15)),
                                                           ("LEG", (10, 30, 50, 35))])]
        for i in range(4)
    }
    images["2008_000009"] = [_object("cow", (0, 0, 30, 40), [("HORN", (0, 0, 5, 5))])]
    for image_id, objects in images.items():
        Image.fromarray(np.full((H, W, 3), 100, np.uint8)).save(
            base / "JPEGImages" / f"{image_id}.jpg")
        with open(base / "Annotations_Part_json_merged_part_classes" / f"{image_id}.json",
                  "w") as f:
            json.dump({"object": objects}, f)
    cats = [f"2008_{i:06d}" for i in range(4)]
    index = {
        "animals": {"object": {
            "cat": {"part": {"HEAD": {"train": ["t1"], "val": cats},
                             "LEG": {"train": ["t2"], "val": cats[:3]}}},
            # no train image: not an evaluated class
            "cow": {"part": {"HORN": {"train": [], "val": ["2008_000009"]}}},
        }},
        "indoor": {"object": {}}, "person": {"object": {}},
        "vehicles": {"object": {"aeroplane": {"part": {
            "TAIL": {"train": ["a"], "val": ["2008_000009"]}}}}},
    }
    with open(base / "all_obj_part_to_image.json", "w") as f:
        json.dump(index, f)
    return str(tmp_path), index


def test_class_list_follows_matcher(part_root):
    _, index = part_root
    assert pascal_part_classes(index, "animals") == ["cat+HEAD", "cat+LEG"]
    assert pascal_part_classes(index, "vehicles") == []  # aeroplane+TAIL is left out


def test_episodes_crop_to_the_object_and_alternate_classes(part_root):
    root, _ = part_root
    name = register_fss_benchmark("pascal_part", 0, 1, root=root, name="_test_pascal_part")
    try:
        episodes = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        # 4 + 3 val entries of cat parts + 1 cow entry = 8 episodes (fewer than 2500)
        assert len(episodes) == 8
        assert meta.fss_class_ids == [0, 1] and meta.fss_class_names == ["cat+HEAD", "cat+LEG"]
        assert [e["class_id"] for e in episodes[:4]] == [0, 1, 0, 1]
        for e in episodes:
            assert e["supports"][0]["image_id"] != e["query"]["image_id"]
            assert e["query"]["crop_box"] == [10, 5, 50, 35]
        mapper = FSSEpisodeMapper(image_size=80)
        out = mapper(episodes[0])
        # HEAD = the top-left 10x10 of the 40 (wide) x 30 (tall) object crop; resized to 80x80
        # (nearest: source row floor(y * 30 / 80) < 10 for y <= 26) -> 20 columns x 27 rows.
        gt = out["sem_seg_gt"]
        assert gt.shape == (80, 80) and gt[:27, :20].all() and gt.sum() == 20 * 27
        ref = out["references"][0]["instances"].gt_masks[0]
        assert ref[:20, :20].all()
        # The metric of the fold: an oracle prediction scores 100 IoU on its class.
        totals = accumulate_fss([gt], [gt], [out["class_id"]])
        assert fss_scores(totals, meta.fss_class_ids)["IoU-0"] == pytest.approx(100.0)
    finally:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def test_missing_index_points_to_readme(tmp_path):
    name = register_fss_benchmark("pascal_part", 2, 1, root=str(tmp_path),
                                  name="_test_pascal_part_missing")
    try:
        with pytest.raises(FileNotFoundError, match="all_obj_part_to_image.json.*#pascal-part"):
            DatasetCatalog.get(name)
    finally:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def test_prepare_script_builds_the_documented_tree(part_root, tmp_path):
    import subprocess
    import sys
    import zipfile

    root, _ = part_root
    base = os.path.join(root, "Pascal-Part", "VOCdevkit", "VOC2010")
    archive = str(tmp_path / "pascal.zip")
    with zipfile.ZipFile(archive, "w") as zf:  # laid out as a release zip: one top folder
        zf.write(os.path.join(base, "all_obj_part_to_image.json"),
                 "pascal/all_obj_part_to_image.json")
        folder = os.path.join(base, "Annotations_Part_json_merged_part_classes")
        for name in os.listdir(folder):
            zf.write(os.path.join(folder, name),
                     f"pascal/Annotations_Part_json_merged_part_classes/{name}")
    out_root = tmp_path / "out"
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "datasets", "prepare_pascal_part.py")
    proc = subprocess.run([sys.executable, script, "--voc2010", base, "--matcher-annotations",
                           archive, "--root", str(out_root)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "animals: 2 part classes" in proc.stdout
    name = register_fss_benchmark("pascal_part", 0, 1, root=str(out_root),
                                  name="_test_pascal_part_prepared")
    try:
        assert len(DatasetCatalog.get(name)) == 8
    finally:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
