"""The in-context pair mapper on a tiny generated dataset (instance and panoptic records)."""
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from PIL import Image

from sine.data.build import WeightedTrainingSampler, build_pair_items
from sine.data.dataset_mappers.in_context_pair_mapper import (
    InContextPairMapper,
    PairSamplingError,
)
from sine.data.pair_index import CategoryIndex

COLORS = {0: (230, 20, 20), 1: (20, 230, 20), 2: (20, 20, 230)}


def _box_poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _make_images(tmp_path, n=4, h=60, w=80):
    """Images with one colour per category and annotations that carry ids."""
    records, next_id = [], 100
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((h, w, 3), 128, np.uint8)
        annos = []
        for k, cat in enumerate([0, 1, 2] if i % 2 == 0 else [1, 0]):
            x0, y0 = 5 + 25 * k, 5 + int(rng.integers(0, 20))
            x1, y1 = x0 + 18, y0 + 25
            img[y0:y1, x0:x1] = COLORS[cat]
            annos.append(
                {
                    "bbox": [x0, y0, x1, y1],
                    "bbox_mode": 0,
                    "category_id": cat,
                    "segmentation": _box_poly(x0, y0, x1, y1),
                    "iscrowd": 0,
                    "id": next_id,
                }
            )
            next_id += 1
        path = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(path)
        records.append(
            {"file_name": str(path), "height": h, "width": w, "image_id": i, "annotations": annos}
        )
    return records


def _mapper(records, crop_ratio, augs=None, **kwargs):
    return InContextPairMapper(
        indexes=[CategoryIndex("toy", records)],
        augmentations=[] if augs is None else augs,
        crop_ratio=crop_ratio,
        **kwargs,
    )


def test_same_image_pairs_share_instance_ids(tmp_path):
    records = _make_images(tmp_path)
    mapper = _mapper(records, crop_ratio=1.0)
    np.random.seed(0)
    for cat in (0, 1, 2):
        pair = mapper({"dataset": 0, "category_id": cat})
        ref = pair["references"][0]["instances"]
        assert pair["pair_type"] == "same_image"
        assert set(pair["instances"].ins_ids.tolist()) == set(ref.ins_ids.tolist())
        # reference instances are sorted by category
        assert ref.gt_classes.tolist() == sorted(ref.gt_classes.tolist())


def test_cross_image_pairs_share_classes(tmp_path):
    records = _make_images(tmp_path)
    mapper = _mapper(records, crop_ratio=0.0)
    np.random.seed(1)
    for _ in range(6):
        pair = mapper({"dataset": 0, "category_id": 1})
        ref = pair["references"][0]["instances"]
        tar = pair["instances"]
        assert pair["pair_type"] == "cross_image"
        assert set(tar.gt_classes.tolist()) <= set(ref.gt_classes.tolist())
        assert 1 in ref.gt_classes.tolist()
        # two different images: annotation ids are disjoint
        assert not set(tar.ins_ids.tolist()) & set(ref.ins_ids.tolist())


def test_augmentations_keep_masks_aligned(tmp_path):
    records = _make_images(tmp_path)
    augs = [
        T.RandomFlip(horizontal=True),
        T.ResizeScale(0.5, 2.0, 64, 64),
        T.FixedSizeCrop((64, 64), pad=False),
    ]
    mapper = _mapper(records, crop_ratio=0.5, augs=augs)
    np.random.seed(2)
    checked = 0
    for _ in range(10):
        pair = mapper({"dataset": 0, "category_id": int(np.random.randint(3))})
        for image, inst in [(pair["image"], pair["instances"])] + [
            (r["image"], r["instances"]) for r in pair["references"]
        ]:
            assert image.dtype == torch.uint8 and image.shape[1:] == inst.gt_masks.shape[1:]
            for mask, cat in zip(inst.gt_masks, inst.gt_classes.tolist()):
                assert mask.any()
                inside = image[:, mask].float().mean(dim=1)
                # bilinear resizing blurs borders; the mask's mean colour is the object's
                assert torch.allclose(inside, torch.tensor(COLORS[cat]).float(), atol=45)
                checked += 1
    assert checked > 20


def test_panoptic_records(tmp_path):
    h, w = 40, 50
    ids = np.zeros((h, w), np.int64)
    ids[:, :] = 7  # stuff segment
    ids[5:20, 5:20] = 300  # id 300 needs two bytes
    ids[22:35, 25:45] = 70000  # and three
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan.png")
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(tmp_path / "img.jpg")
    record = {
        "file_name": str(tmp_path / "img.jpg"),
        "pan_seg_file_name": str(tmp_path / "pan.png"),
        "height": h,
        "width": w,
        "segments_info": [
            {"id": 7, "category_id": 5, "iscrowd": 0, "isthing": False},
            {"id": 300, "category_id": 1, "iscrowd": 0, "isthing": True},
            {"id": 70000, "category_id": 1, "iscrowd": 0, "isthing": True},
        ],
    }
    pair = _mapper([record], crop_ratio=1.0)({"dataset": 0, "category_id": 1})
    inst = pair["instances"]
    by_id = dict(zip(inst.ins_ids.tolist(), inst.gt_masks))
    assert set(by_id) == {7, 300, 70000}
    assert torch.equal(by_id[300], torch.from_numpy(ids == 300))
    assert torch.equal(by_id[70000], torch.from_numpy(ids == 70000))


def test_empty_and_crowd_only_datasets_are_errors(tmp_path):
    with pytest.raises(ValueError, match="no non-crowd instance"):
        CategoryIndex("empty", [])
    records = _make_images(tmp_path, n=1)
    for a in records[0]["annotations"]:
        a["iscrowd"] = 1
    with pytest.raises(ValueError, match="no non-crowd instance"):
        CategoryIndex("crowd", records)


def test_unreadable_image_is_reported_with_its_path(tmp_path):
    records = _make_images(tmp_path, n=2)
    bad = tmp_path / "img0.png"
    bad.write_bytes(b"not a png")
    mapper = _mapper(records, crop_ratio=1.0)
    np.random.seed(0)
    with pytest.raises(Exception, match="img0.png"):
        for _ in range(20):  # category 2 only occurs in img0
            mapper({"dataset": 0, "category_id": 2})
    # Asked to skip: draws elsewhere, and gives up with a clear error when nothing is readable.
    (tmp_path / "img1.png").write_bytes(b"")
    skipping = _mapper(records, crop_ratio=1.0, skip_bad_images=True, max_attempts=5)
    with pytest.raises(PairSamplingError, match="no valid reference/target pair"):
        skipping({"dataset": 0, "category_id": 1})


def test_weighted_sampler_follows_dataset_weights(tmp_path):
    records = _make_images(tmp_path)
    a, b = CategoryIndex("a", records), CategoryIndex("b", records[:2])
    items, weights = build_pair_items([a, b], [0.25, 0.75])
    sampler = iter(WeightedTrainingSampler(weights, seed=0))
    draws = [items[next(sampler)]["dataset"] for _ in range(4000)]
    assert abs(np.mean(draws) - 0.75) < 0.03
