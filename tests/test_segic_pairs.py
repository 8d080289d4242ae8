"""SegIC's pair sampling through the one pair mapper (policy "segic") and its box-mask loss."""
import numpy as np
import pytest
import torch
from detectron2.config import CfgNode
from PIL import Image

from sine.config import get_sine_cfg
from sine.data.dataset_mappers.in_context_pair_mapper import (
    InContextPairMapper,
    build_segic_view_augmentation,
)
from sine.data.pair_index import CategoryIndex
from sine.modeling.meta_arch.segic_model import SegIC

NAMES = ["square", "disc", "bar", "speck"]


def _records(tmp_path, n=4, size=96):
    """Images holding categories 0..2 as big boxes (at image-dependent places) and category 3 as
    a 4x4 speck (always below SegIC's 100-pixel instance area)."""
    records, next_id = [], 1
    for i in range(n):
        img = np.full((size, size, 3), 100 + 30 * i, np.uint8)
        annos = []
        for cat, (x0, y0) in enumerate([(4 + i, 4), (50, 8 + i), (10, 55)]):
            x1, y1 = x0 + 30, y0 + 30
            img[y0:y1, x0:x1] = (40 * cat, 200, 90)
            annos.append({"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": cat,
                          "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "iscrowd": 0,
                          "id": next_id})
            next_id += 1
        annos.append({"bbox": [80, 80, 84, 84], "bbox_mode": 0, "category_id": 3,
                      "segmentation": [[80, 80, 84, 80, 84, 84, 80, 84]], "iscrowd": 0,
                      "id": next_id})
        next_id += 1
        path = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(path)
        records.append({"file_name": str(path), "height": size, "width": size, "image_id": i,
                        "annotations": annos})
    return records


def _view_cfg(size=96):
    cfg = get_sine_cfg()
    cfg.INPUT.IMAGE_SIZE = size
    return cfg


def _mapper(records, kind, **kwargs):
    return InContextPairMapper(
        indexes=[CategoryIndex("toy", records)], augmentations=[], policy="segic",
        sample_kinds=[kind], class_names=[NAMES],
        view_augmentation=build_segic_view_augmentation(_view_cfg()), **kwargs)


def test_semantic_pair_is_one_class_in_two_different_images(tmp_path):
    records = _records(tmp_path)
    mapper = _mapper(records, "semantic")
    np.random.seed(0)
    seen_refs = set()
    for category in (0, 1, 2):
        for _ in range(5):
            pair = mapper({"dataset": 0, "category_id": category})
            ref = pair["references"][0]
            assert pair["pair_type"] == "semantic" and pair["class_name"] == NAMES[category]
            assert not torch.equal(pair["image"], ref["image"])  # a different image
            for inst in (pair["instances"], ref["instances"]):
                assert inst.gt_classes.tolist() == [category] and len(inst) == 1
            assert pair["instances"].ins_ids.tolist() == ref["instances"].ins_ids.tolist()
            # The mask is exactly that class's region (30 x 30 box), nothing of the others.
            assert int(pair["instances"].gt_masks.sum()) == 30 * 30
            seen_refs.add(int(ref["image"][0, 0, 0]))
    assert len(seen_refs) > 1, "the reference image never varies"


def test_instance_pair_is_two_views_of_one_image_with_large_shared_instances(tmp_path):
    records = _records(tmp_path)
    mapper = _mapper(records, "instance")
    np.random.seed(0)
    torch.manual_seed(0)
    counts = set()
    for _ in range(30):
        pair = mapper({"dataset": 0, "category_id": 0})
        tar, ref = pair["instances"], pair["references"][0]["instances"]
        assert pair["pair_type"] == "instance" and pair["class_name"] is None
        assert pair["image"].shape == (3, 96, 96)  # RandomResizedCrop to INPUT.IMAGE_SIZE
        assert tar.ins_ids.tolist() == ref.ins_ids.tolist()
        assert 1 <= len(tar) <= 3
        assert 3 not in tar.gt_classes.tolist(), "an instance under 100 px was kept"
        assert (tar.gt_masks.flatten(1).sum(1) > 100).all()
        assert (ref.gt_masks.flatten(1).sum(1) > 100).all()
        counts.add(len(tar))
    assert len(counts) > 1, "the number of instances per pair never varies"


def test_instance_count_is_capped(tmp_path):
    mapper = _mapper(_records(tmp_path), "instance", max_instances=1)
    np.random.seed(1)
    assert all(len(mapper({"dataset": 0, "category_id": 1})["instances"]) == 1
               for _ in range(10))


def test_box_pairs_carry_filled_boxes_and_the_box_flag(tmp_path):
    records = _records(tmp_path)
    for r in records:  # Objects365-like: boxes only
        for a in r["annotations"]:
            a.pop("segmentation")
    mapper = _mapper(records, "box")
    np.random.seed(0)
    pair = mapper({"dataset": 0, "category_id": 0})
    assert pair["box_masks"] and pair["pair_type"] == "box"
    for m in pair["instances"].gt_masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        # A filled rectangle: its pixel count is its bounding box's area.
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)


def test_unknown_policy_and_kind_are_named():
    with pytest.raises(ValueError, match="PAIR_POLICY"):
        InContextPairMapper(indexes=[], augmentations=[], policy="matcher")
    cfg = get_sine_cfg()
    cfg.DATASETS.TRAIN = ("a",)
    cfg.DATASETS.TRAIN_SAMPLE_KINDS = ["panoptic"]
    from sine.data.dataset_mappers.in_context_pair_mapper import _sample_kinds

    with pytest.raises(ValueError, match="TRAIN_SAMPLE_KINDS"):
        _sample_kinds(cfg)


def test_projection_loss_ignores_pixels_inside_the_box():
    """A box says where the object ends, not which pixels inside it are foreground: a disc
    inscribed in the box is (nearly) free under the projection loss, a shifted disc is not."""
    S, g4 = 64, 16
    gt = torch.zeros(1, S, S, dtype=torch.bool)
    gt[:, 16:48, 16:48] = True
    yy, xx = torch.meshgrid(torch.arange(g4) + 0.5, torch.arange(g4) + 0.5, indexing="ij")

    def disc(cx, cy):
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= 4.0 ** 2
        return (inside.float() * 40 - 20)[None, None]

    def loss(logits, box):
        flags = torch.tensor([box])
        out = _LossOnly().mask_losses(logits, gt, flags)
        return float(out["loss_mask"] + out["loss_dice"])

    inscribed, shifted = disc(8, 8), disc(5, 5)
    assert loss(inscribed, True) < 0.05
    assert loss(shifted, True) > 10 * loss(inscribed, True)
    # The point loss (masks) does penalise the disc for the box corners it leaves out.
    assert loss(inscribed, False) > 10 * loss(inscribed, True)


class _LossOnly:
    """SegIC's loss methods with the attributes they read (no model needed to test them)."""

    num_points, oversample_ratio, importance_sample_ratio = 256, 3.0, 0.75
    mask_losses = SegIC.mask_losses
    point_losses = SegIC.point_losses
    projection_losses = SegIC.projection_losses


def test_segic_config_keys_exist_once():
    cfg = get_sine_cfg()
    assert isinstance(cfg.INPUT.SEGIC, CfgNode) and cfg.INPUT.PAIR_POLICY == "sine"


def _tiny_segic(*opts):
    import os

    from detectron2.modeling import build_model

    from tests.tiny_model import TINY_SEGIC_OPTS

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = get_sine_cfg(os.path.join(root, "configs", "segic", "Base-SegIC.yaml"),
                       TINY_SEGIC_OPTS + ["MODEL.SEGIC.TRAIN.NUM_POINTS", "256", *opts])
    return build_model(cfg).train()


def _mixed_batch(tmp_path):
    """One semantic, one instance and one box pair from the mapper (96 px images)."""
    records = _records(tmp_path)
    (tmp_path / "boxes").mkdir()
    boxes = _records(tmp_path / "boxes")
    for r in boxes:
        for a in r["annotations"]:
            a.pop("segmentation")
    np.random.seed(0)
    torch.manual_seed(0)
    return [_mapper(records, "semantic")({"dataset": 0, "category_id": 1}),
            _mapper(records, "instance")({"dataset": 0, "category_id": 0}),
            _mapper(boxes, "box")({"dataset": 0, "category_id": 2})]


def test_mapper_pairs_train_segic_with_a_trainable_demo_vit(tmp_path):
    batch = _mixed_batch(tmp_path)
    model = _tiny_segic("MODEL.DINOV2.FROZEN", "False")
    assert model.prepare_pairs(batch).box_masks == [False, False, True]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.encoder.training
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_released_recipe_keeps_the_vit_frozen(tmp_path):
    batch = _mixed_batch(tmp_path)
    model = _tiny_segic()
    sum(model(batch).values()).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert not model.encoder.training
