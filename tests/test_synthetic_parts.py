"""Synthetic part segmentation: objects of two differently textured halves, annotated per part,
in PASCAL-Part's layout, run through the one-shot part protocol."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from inference_fss.benchmarks import pascal_part_classes, register_fss_benchmark
from sine.data.fss_episodes import FSSEpisodeMapper
from sine.data.synthetic.parts import PART_CLASSES, PART_FAMILY, generate_synthetic_parts


@pytest.fixture(scope="module")
def parts_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic_parts(root, seed=0, num_train=16, num_val=12)
    return root


def _base(root):
    return os.path.join(root, "synthetic_parts", "Pascal-Part", "VOCdevkit", "VOC2010")


def test_parts_are_disjoint_halves_with_their_own_texture(parts_root):
    base = _base(parts_root)
    with open(os.path.join(base, "Annotations_Part_json_merged_part_classes",
                           "000001.json")) as f:
        objects = json.load(f)["object"]
    assert objects
    for obj in objects:
        masks = {p["name"]: mask_util.decode(p["mask"][0]).astype(bool) for p in obj["parts"]}
        assert set(masks) <= {"UPPER", "LOWER"}
        if len(masks) == 2:
            assert not (masks["UPPER"] & masks["LOWER"]).any()
        box = obj["bndbox"]
        for m in masks.values():
            ys, xs = np.nonzero(m)
            assert box["xmin"] <= xs.min() and xs.max() < box["xmax"]
            assert box["ymin"] <= ys.min() and ys.max() < box["ymax"]
    assert all(PART_FAMILY[(s, "UPPER")] != PART_FAMILY[(s, "LOWER")]
               for s, _ in PART_FAMILY)


def test_same_seed_same_bytes(parts_root, tmp_path):
    again = generate_synthetic_parts(str(tmp_path), seed=0, num_train=16, num_val=12)
    name = "Pascal-Part/VOCdevkit/VOC2010/all_obj_part_to_image.json"
    with open(os.path.join(again, name), "rb") as a, \
            open(os.path.join(parts_root, "synthetic_parts", name), "rb") as b:
        assert a.read() == b.read()


def test_train_instances_and_part_protocol(parts_root):
    from sine.data.datasets.register_synthetic import register_synthetic_parts

    register_synthetic_parts(parts_root)
    records = DatasetCatalog.get("synthetic_parts_train")
    assert len(records) == 16
    ann = records[0]["annotations"][0]
    assert "id" in ann and 0 <= ann["category_id"] < len(PART_CLASSES)

    with open(os.path.join(_base(parts_root), "all_obj_part_to_image.json")) as f:
        index = json.load(f)
    classes = pascal_part_classes(index, "vehicles")
    assert set(classes) <= {"hexagon+UPPER", "hexagon+LOWER", "ellipse+UPPER", "ellipse+LOWER"}
    name = register_fss_benchmark("synthetic_parts", 3, 1, root=parts_root,
                                  name="_test_synthetic_parts")
    try:
        episodes = DatasetCatalog.get(name)
        assert MetadataCatalog.get(name).fss_class_names == classes
        out = FSSEpisodeMapper(image_size=64)(episodes[0])
        assert out["sem_seg_gt"].any() and out["references"][0]["instances"].gt_masks.any()
    finally:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
