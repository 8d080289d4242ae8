"""SINE model: input validation, checkpoint loading errors, parameter count and input handling
(non-square / oversized images, several references) on a tiny random model."""
import importlib.util
import logging
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from sine.checkpoint import SINECheckpointer
from sine.config import add_sine_config
from sine.modeling.backbone.dinov2 import build_dinov2_vit, load_dinov2_checkpoint
from sine.modeling.transformer_decoder.in_context_fusion import MaskPooling
from sine.modeling.transformer_decoder.reference_pooling import pool_reference_tokens

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_cfg(**overrides):
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    d, s = cfg.MODEL.DINOV2, cfg.MODEL.SINE
    d.EMBED_DIM, d.DEPTH, d.NUM_HEADS, d.IMG_SIZE = 32, 1, 2, 56
    s.FEAT_CHANS = s.MASK_DIM = 32
    s.NUM_QUERIES, s.DEC_LAYERS, s.NHEADS, s.DIM_FEEDFORWARD = 4, 2, 2, 32
    s.PAD_SIZE, s.TRAIN_NUM_POINTS = 56, 64
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg()).eval()


def _image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)


def _instances(h, w, boxes, classes, ids):
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for m, (y0, x0, y1, x1) in zip(masks, boxes):
        m[y0:y1, x0:x1] = True
    inst = Instances((h, w))
    inst.gt_masks = masks
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.ins_ids = torch.tensor(ids, dtype=torch.int64)
    return inst


def _sample(tar_hw=(42, 50), ref_hws=((56, 40),), height=None, width=None):
    h, w = tar_hw
    refs = [
        {"image": _image(rh, rw, seed=k + 1),
         "instances": _instances(rh, rw, [(2, 3, 20, 25), (22, 5, 40, 30)], [1, 4], [7, 8 + k])}
        for k, (rh, rw) in enumerate(ref_hws)
    ]
    return {"image": _image(h, w), "height": height or h, "width": width or w,
            "instances": _instances(h, w, [(5, 5, 20, 20)], [4], [7]), "references": refs}


# ---------------------------------------------------------------- parameter count
def test_default_config_has_the_official_trainable_parameter_count():
    """ViT-L/14 + 200 queries: 18,777,220 trainable parameters (spec §6.2); DINOv2 frozen."""
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 18_777_220
    assert not any(p.requires_grad for p in model.image_encoder.encoder.parameters())
    assert sum(p.numel() for p in model.image_encoder.encoder.parameters()) == 304_368_640


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda x: x["references"][0].update(
            instances=_instances(56, 40, [], [], [])), "no mask"),
        (lambda x: x["references"][0]["instances"].gt_masks[1].zero_(), r"mask\(s\) \[1\]"),
        (lambda x: x["references"][0].update(
            instances=_instances(50, 40, [(0, 0, 5, 5)], [1], [1])), "gt_masks have shape"),
        (lambda x: x.update(image=_image(42, 50)[:1]), "RGB"),
        (lambda x: x["references"][0].update(image=torch.zeros(4, 56, 40, dtype=torch.uint8)),
         "RGB"),
        (lambda x: x.update(image=_image(42, 50).float() / 255), "uint8"),
        (lambda x: x.update(references=[]), "references"),
    ],
    ids=["ref-without-mask", "empty-ref-mask", "mask-size", "grey", "rgba", "float", "no-refs"],
)
def test_bad_inputs_raise_value_error(model, mutate, message):
    x = _sample()
    mutate(x)
    with pytest.raises(ValueError, match=message):
        model([x])


def test_training_target_mask_size_mismatch_raises(model):
    x = _sample()
    x["instances"] = _instances(40, 50, [(0, 0, 5, 5)], [4], [7])
    model.train()
    try:
        with pytest.raises(ValueError, match="gt_masks have shape"):
            model([x])
    finally:
        model.eval()


def test_neck_use_fc_is_a_single_conv_with_the_official_key():
    model = build_model(tiny_cfg(**{"MODEL.SINE.NECK_USE_FC": True}))
    neck_keys = [k for k in model.state_dict() if k.startswith("image_encoder.neck")]
    assert neck_keys == ["image_encoder.neck.weight"]
    assert model.image_encoder.output_shape()["neck"].channels == 32


def test_pad_size_must_be_a_patch_multiple():
    with pytest.raises(ValueError, match="PAD_SIZE"):
        build_model(tiny_cfg(**{"MODEL.SINE.PAD_SIZE": 50}))


# ---------------------------------------------------------------- input handling
def test_non_square_oversized_images_and_several_references(model):
    """Images larger than PAD_SIZE pad to the next multiple of 14; outputs at height x width."""
    x = _sample(tar_hw=(62, 45), ref_hws=((40, 71), (30, 30)), height=31, width=23)
    x["references"][0]["instances"].gt_masks = BitMasks(x["references"][0]["instances"].gt_masks)
    with torch.no_grad():
        (out,), features = model.forward_raw([x])
        (res,) = model([x])
    assert features["tar_neck"].shape[-2:] == (6, 6)  # 71 -> 84 = 6 patches
    assert out["ref_id_labels"].tolist() == [[1, 4, 1, 4]]
    assert out["ref_sem_labels"].tolist() == [[1, 4]]
    assert res["sem_seg"].shape == (2, 31, 23)
    assert res["instances"].image_size == (31, 23)
    assert sorted(res["id"].pred_ids.tolist()) == [7, 7, 8, 9]  # ID_SCORE_THRESH -1e9 keeps all


def test_joint_prototype_is_pixel_weighted_mean_over_references():
    torch.manual_seed(0)
    feats = torch.randn(2, 8, 4, 4)
    masks = [torch.zeros(1, 16, 16, dtype=torch.bool), torch.zeros(2, 16, 16, dtype=torch.bool)]
    masks[0][0, :8, :8] = True   # class 3 in ref 0
    masks[1][0, 8:, :] = True    # class 3 in ref 1
    masks[1][1, :4, :4] = True   # class 5 in ref 1
    labels = [torch.tensor([3]), torch.tensor([3, 5])]
    id_tok, sem_tok, id_lab, sem_lab = pool_reference_tokens(feats, masks, labels, (4, 4),
                                                             MaskPooling())
    assert id_lab.tolist() == [3, 3, 5] and sem_lab.tolist() == [3, 5]
    f0, f1 = feats[0].flatten(1), feats[1].flatten(1)  # masks map to 4x4 cells exactly
    cells0 = [r * 4 + c for r in range(2) for c in range(2)]
    cells1 = [r * 4 + c for r in range(2, 4) for c in range(4)]
    expected = (f0[:, cells0].sum(1) + f1[:, cells1].sum(1)) / (len(cells0) + len(cells1))
    assert torch.allclose(sem_tok[0, 0], expected, atol=1e-5)
    assert torch.allclose(id_tok[0, 0], f0[:, cells0].mean(1), atol=1e-5)
    assert torch.allclose(id_tok[0, 1], f1[:, cells1].mean(1), atol=1e-5)


def test_fully_blocked_cross_attention_rows_are_unblocked():
    """If every mask logit is negative, queries attend everywhere instead of giving NaNs."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    dec = model.transformer_decoder
    with torch.no_grad():
        dec.mask_feat_layer[3].weight.zero_()
        dec.mask_feat_layer[3].bias.fill_(1.0)
        dec.mask_embed.layers[-1].weight.zero_()
        dec.mask_embed.layers[-1].bias.fill_(-1.0)
        (out,), _ = model.forward_raw([_sample()])
    assert (out["aux_outputs"][0]["pred_ins_masks"] < 0).all()
    assert torch.isfinite(out["pred_ins_logits"]).all()
    assert torch.isfinite(out["pred_id_logits"]).all()


def test_training_returns_weighted_losses_and_keeps_encoder_frozen(model):
    model.train()
    try:
        losses = model([_sample(), _sample(tar_hw=(30, 56))])
    finally:
        model.eval()
    assert set(losses) == set(model.criterion.weight_dict)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.image_encoder.neck[0].weight.grad is not None
    assert all(p.grad is None for p in model.image_encoder.encoder.parameters())
    model.zero_grad()


def test_train_mode_keeps_dinov2_in_eval_mode(model):
    model.train()
    try:
        assert not model.image_encoder.encoder.training
        assert model.image_encoder.neck.training
    finally:
        model.eval()


# ---------------------------------------------------------------- checkpoints
def _dinov2_file(tmp_path, encoder, transform=lambda sd: sd):
    path = str(tmp_path / "dinov2.pth")
    torch.save({"teacher": transform({"backbone." + k: v for k, v in
                                      encoder.state_dict().items()})}, path)
    return path


def test_dinov2_checkpoint_loads_official_teacher_format(tmp_path):
    source = build_dinov2_vit("x", embed_dim=32, depth=1, num_heads=2, img_size=56)
    target = build_dinov2_vit("x", embed_dim=32, depth=1, num_heads=2, img_size=56)
    load_dinov2_checkpoint(target, _dinov2_file(tmp_path, source))
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda sd: {k.replace("blocks.", "layers."): v for k, v in sd.items()},
         "missing keys .*blocks.0"),
        (lambda sd: {**sd, "backbone.register_tokens": torch.zeros(1, 4, 32)},
         "unexpected keys .*register_tokens"),
        (lambda sd: {**sd, "backbone.pos_embed": torch.zeros(1, 10, 32)},
         "shape mismatches .*pos_embed"),
    ],
    ids=["renamed", "extra", "shape"],
)
def test_dinov2_checkpoint_that_does_not_fit_raises(tmp_path, transform, message):
    model = build_dinov2_vit("x", embed_dim=32, depth=1, num_heads=2, img_size=56)
    path = _dinov2_file(tmp_path, model, transform)
    with pytest.raises(ValueError, match=f"(?s){message}.*official DINOv2 checkpoint"):
        load_dinov2_checkpoint(model, path)


def test_official_checkpoint_without_dinov2_keys_takes_them_from_dinov2_weights(
        tmp_path, model, caplog):
    """Released-style file (no image_encoder.encoder.*) + MODEL.DINOV2.WEIGHTS: nothing missing."""
    weights = _dinov2_file(tmp_path, model.image_encoder.encoder)
    flat = {k: v for k, v in model.state_dict().items()
            if not k.startswith("image_encoder.encoder.")}
    path = str(tmp_path / "pytorch_model.bin")
    torch.save(flat, path)
    torch.manual_seed(1)
    fresh = build_model(tiny_cfg(**{"MODEL.DINOV2.WEIGHTS": weights}))
    with caplog.at_level(logging.INFO):
        DetectionCheckpointer(fresh).load(path)
    assert "not found in the checkpoint" not in caplog.text
    assert "keeping those loaded from MODEL.DINOV2.WEIGHTS" in caplog.text
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    SINECheckpointer(fresh).load(path)  # strict: accepted too


def test_strict_checkpointer_rejects_keys_that_do_not_fit(tmp_path, model):
    sd = dict(model.state_dict())
    sd["transformer_decoder.extra.weight"] = torch.zeros(1)
    sd.pop("transformer_decoder.temp")
    path = str(tmp_path / "bad.pth")
    torch.save({"model": sd}, path)
    with pytest.raises(ValueError, match="(?s)missing.*transformer_decoder.temp.*unexpected"):
        SINECheckpointer(build_model(tiny_cfg())).load(path)


def test_convert_tool_writes_loadable_checkpoint_and_rejects_bad_keys(tmp_path, model):
    path = os.path.join(ROOT, "tools", "convert_official_checkpoint.py")
    spec = importlib.util.spec_from_file_location("convert_official_checkpoint", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src, out = str(tmp_path / "official.bin"), str(tmp_path / "converted.pth")
    torch.save(model.state_dict(), src)
    tool.convert(tiny_cfg(), src, out)
    converted = torch.load(out)["model"]
    assert set(converted) == set(model.state_dict())
    bad = dict(model.state_dict())
    bad["transformer_decoder.query_feat.weight"] = torch.zeros(5, 32)
    torch.save(bad, src)
    with pytest.raises(ValueError, match="does not fit"):
        tool.convert(tiny_cfg(), src, out)
