"""The optimised inference path (MODEL.SINE.FAST_INFERENCE, the default) gives the outputs of the
official computation (FAST_INFERENCE False), trains the same, and its caches follow the weights."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Instances
from torch import nn

from sine.config import add_sine_config
from sine.modeling.backbone.dinov2 import DinoVisionTransformer
from sine.modeling.postprocessing import ResizedMaskLogits, resize_mask_logits
from sine.modeling.transformer_decoder.layers import multi_head_attention
from sine.modeling.transformer_decoder.m_former import PRED_KEYS, LazyAuxOutputs

TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.DINOV2.EMBED_DIM", "48", "MODEL.DINOV2.DEPTH", "2",
    "MODEL.DINOV2.NUM_HEADS", "2", "MODEL.SINE.FEAT_CHANS", "32", "MODEL.SINE.MASK_DIM", "32",
    "MODEL.SINE.NHEADS", "2", "MODEL.SINE.DIM_FEEDFORWARD", "64", "MODEL.SINE.DEC_LAYERS", "2",
    "MODEL.SINE.NUM_QUERIES", "5", "MODEL.SINE.PAD_SIZE", "112",
]
ATOL = 1e-4


def _cfg(*opts):
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.merge_from_list(TINY + list(opts))
    return cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(_cfg()).eval()


def _instances(h, w, boxes, classes, seed):
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for m, (y0, x0, y1, x1) in zip(masks, boxes):
        m[y0:y1, x0:x1] = True
    return Instances((h, w), gt_masks=masks, gt_classes=torch.tensor(classes),
                     ins_ids=torch.arange(seed * 10, seed * 10 + len(boxes)))


def _inputs():
    """Two targets: non-square content, outputs at another size, 1 and 2 references."""
    g = torch.Generator().manual_seed(1)

    def image(h, w):
        return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)

    ref_a = {"image": image(84, 112), "instances": _instances(
        84, 112, [(5, 5, 40, 50), (30, 60, 80, 110), (50, 10, 70, 30)], [3, 7, 3], 0)}
    ref_b = {"image": image(112, 70), "instances": _instances(112, 70, [(10, 10, 60, 60)], [7], 1)}
    return [
        {"image": image(84, 112), "height": 120, "width": 160, "references": [ref_a]},
        {"image": image(70, 112), "height": 70, "width": 112, "references": [ref_a, ref_b]},
    ]


def _with_path(model, fast, fn):
    model.set_fast_inference(fast)
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.set_fast_inference(True)


def _close(a, b, name, atol=ATOL):
    assert a.shape == b.shape, f"{name}: {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    assert diff <= atol, f"{name}: max |diff| {diff:.3g} > {atol}"


def test_switch_reaches_every_optimised_module():
    torch.manual_seed(0)
    ref = build_model(_cfg("MODEL.SINE.FAST_INFERENCE", "False"))
    flags = {type(m).__name__: m.fast_inference for m in ref.modules()
             if hasattr(m, "fast_inference")}
    assert {"Attention", "DinoVisionTransformer", "SelfAttentionLayer", "CrossAttentionLayer",
            "MFormerDecoder", "SINE"} <= set(flags)
    assert not any(flags.values())


def test_raw_outputs_and_features_equal(model):
    fast, fast_feats = _with_path(model, True, lambda: model.forward_raw(_inputs()))
    ref, ref_feats = _with_path(model, False, lambda: model.forward_raw(_inputs()))
    for key in ref_feats:
        _close(fast_feats[key], ref_feats[key], key)
    for b, (f, r) in enumerate(zip(fast, ref)):
        assert torch.equal(f["ref_id_labels"], r["ref_id_labels"])
        assert torch.equal(f["ref_sem_labels"], r["ref_sem_labels"])
        for key in PRED_KEYS + ("id_hidden_states", "ins_hidden_states"):
            _close(f[key], r[key], f"{b}.{key}")
        assert len(f["aux_outputs"]) == len(r["aux_outputs"]) == 2
        for i, (fa, ra) in enumerate(zip(f["aux_outputs"], r["aux_outputs"])):
            for key in PRED_KEYS:
                _close(fa[key], ra[key], f"{b}.aux{i}.{key}")


def test_post_processed_results_equal(model):
    fast = _with_path(model, True, lambda: model(_inputs()))
    ref = _with_path(model, False, lambda: model(_inputs()))
    raw, _ = _with_path(model, False, lambda: model.forward_raw(_inputs()))
    for b, (f, r, x) in enumerate(zip(fast, ref, _inputs())):
        _close(f["sem_seg"], r["sem_seg"], f"{b}.sem_seg")
        assert torch.equal(f["sem_seg_classes"], r["sem_seg_classes"])
        sizes = (model.pad_size, model.pad_size), tuple(x["image"].shape[-2:]), \
            (x["height"], x["width"])
        for key, logits in (("instances", "pred_ins_masks"), ("id", "pred_id_masks")):
            a, e = f[key], r[key]
            assert a.image_size == e.image_size == (x["height"], x["width"])
            assert len(a) == len(e) > 0, f"{b}.{key}: {len(a)} vs {len(e)}"
            assert torch.equal(a.pred_classes, e.pred_classes)
            _close(a.scores, e.scores, f"{b}.{key}.scores", atol=1e-5)
            # A pixel may only differ where some query's logit is within rounding of 0.
            near_zero = (resize_mask_logits(raw[b][logits][0], *sizes).abs() < ATOL).any(0)
            assert not ((a.pred_masks ^ e.pred_masks) & ~near_zero).any(), f"{b}.{key} masks"
            if torch.equal(a.pred_masks, e.pred_masks):
                assert torch.equal(a.pred_boxes.tensor, e.pred_boxes.tensor)
        assert torch.equal(f["id"].pred_ids, r["id"].pred_ids)


def test_resized_mask_logits_equal_full_resizing():
    torch.manual_seed(0)
    logits = torch.randn(6, 32, 32)
    for image_size, output_size in [((84, 112), (120, 160)), ((112, 70), (112, 70)),
                                    ((13, 112), (13, 112)), ((112, 112), (50, 50))]:
        full = resize_mask_logits(logits, (112, 112), image_size, output_size)
        lazy = ResizedMaskLogits(logits, (112, 112), image_size, output_size)
        assert lazy.shape == full.shape
        index = torch.tensor([4, 0, 4])
        _close(lazy[index], full[index], f"{image_size}->{output_size}", atol=1e-5)


def test_lazy_aux_outputs_equal_eager_ones(model):
    inputs = model.prepare_inputs(_inputs(), with_targets=False)
    with torch.no_grad():
        feats = model.encode(torch.cat([inputs.tar_images, inputs.ref_images]))["neck"]
        args = (feats[2:3], inputs.ref_masks[:1], inputs.ref_labels[:1], feats[:1])
        lazy = model.decode(*args, lazy_aux=True)
        eager = model.decode(*args, lazy_aux=False)
        # Evaluated outside no_grad: the stored grad mode is used, nothing joins a graph.
    assert isinstance(lazy["aux_outputs"], LazyAuxOutputs)
    assert len(lazy["aux_outputs"]) == len(eager["aux_outputs"])
    for la, ea in zip(lazy["aux_outputs"][::-1], eager["aux_outputs"][::-1]):
        for key in PRED_KEYS:
            assert torch.equal(la[key], ea[key]), key
            assert not la[key].requires_grad


def test_fused_attention_equals_nn_multihead_attention_with_gradients():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4)
    q, kv = torch.randn(5, 2, 16), torch.randn(9, 2, 16)
    mask = torch.rand(2 * 4, 5, 9) > 0.6
    mask[..., 0] = False  # every query sees something
    for query, key, value in ((q, kv, kv), (q, q, q), (q, q + 1, q), (q, kv + 1, kv)):
        out = {}
        for fast in (True, False):
            attn.zero_grad()
            result = multi_head_attention(attn, query, key, value, mask[:, :, :key.shape[0]],
                                          fast)
            result.square().sum().backward()
            out[fast] = (result.detach(), attn.in_proj_weight.grad.clone())
        _close(out[True][0], out[False][0], "output", atol=1e-5)
        _close(out[True][1], out[False][1], "in_proj_weight.grad", atol=1e-4)


def test_vit_attention_gradients_equal_on_both_paths():
    torch.manual_seed(0)
    vit = DinoVisionTransformer(embed_dim=16, depth=1, num_heads=2, img_size=56)
    x = torch.randn(2, 3, 42, 56)
    grads = {}
    for fast in (True, False):
        for m in vit.modules():
            if hasattr(m, "fast_inference"):
                m.fast_inference = fast
        vit.zero_grad()
        vit(x).square().sum().backward()
        grads[fast] = {n: p.grad.clone() for n, p in vit.named_parameters() if p.grad is not None}
    assert "pos_embed" in grads[True] and "blocks.0.attn.qkv.weight" in grads[True]
    for name, grad in grads[True].items():
        _close(grad, grads[False][name], name, atol=1e-4 * grad.abs().max().item())


def test_pos_embed_cache_is_invalidated_when_weights_change():
    torch.manual_seed(0)
    vit = DinoVisionTransformer(embed_dim=16, depth=1, num_heads=2, img_size=56)
    with torch.no_grad():
        first = vit.cached_pos_encoding(5, 7)
        assert vit.cached_pos_encoding(5, 7) is first  # cached
        vit.pos_embed.add_(1.0)  # e.g. an optimizer step
        second = vit.cached_pos_encoding(5, 7)
        assert torch.equal(second, vit.interpolate_pos_encoding(5, 7))
        assert not torch.allclose(second, first)
        state = vit.state_dict()
        state["pos_embed"] = torch.randn_like(state["pos_embed"])
        vit.load_state_dict(state)
        third = vit.cached_pos_encoding(5, 7)
        assert torch.equal(third, vit.interpolate_pos_encoding(5, 7))
        assert not torch.allclose(third, second)
    # Trained pos-embed: never cached, the result stays in the graph.
    assert vit.cached_pos_encoding(5, 7).requires_grad
    # The official path recomputes every call.
    vit.fast_inference = False
    with torch.no_grad():
        assert vit.cached_pos_encoding(5, 7) is not vit.cached_pos_encoding(5, 7)


def test_id_only_decode_gives_the_id_outputs_of_the_full_decode(model):
    inputs = model.prepare_inputs(_inputs(), with_targets=False)
    with torch.no_grad():
        feats = model.encode(torch.cat([inputs.tar_images, inputs.ref_images]))["neck"]
        args = (feats[2:4], inputs.ref_masks[1:3], inputs.ref_labels[1:3], feats[1:2])
        full = model.decode(*args, lazy_aux=False)
        id_only = model.decode(*args, lazy_aux=False, id_only=True)
    assert "pred_ins_logits" not in id_only and "pred_ins_masks" not in id_only
    for key in ("pred_id_logits", "pred_id_masks", "id_hidden_states"):
        _close(id_only[key], full[key], key, atol=1e-5)
    for i, (a, e) in enumerate(zip(id_only["aux_outputs"], full["aux_outputs"])):
        assert set(a) == {"pred_id_logits", "pred_id_masks"}
        _close(a["pred_id_masks"], e["pred_id_masks"], f"aux{i}", atol=1e-5)


def test_identity_only_model_uses_the_id_only_decode(model):
    full = _with_path(model, True, lambda: model(_inputs()))
    model.semantic_on = model.instance_on = False
    try:
        only = _with_path(model, True, lambda: model(_inputs()))
    finally:
        model.semantic_on = model.instance_on = True
    for f, o in zip(full, only):
        assert set(o) == {"id"}
        assert torch.equal(f["id"].pred_ids, o["id"].pred_ids)
        _close(f["id"].scores, o["id"].scores, "id scores", atol=1e-5)


def test_bf16_autocast_option_is_ignored_on_cpu(model):
    torch.manual_seed(0)
    bf16 = build_model(_cfg("MODEL.SINE.AUTOCAST_BF16", "True")).eval()
    bf16.load_state_dict(model.state_dict())
    bf16.set_fast_inference(model.fast_inference)
    with torch.no_grad():
        expected, _ = model.forward_raw(_inputs()[:1])
        got, _ = bf16.forward_raw(_inputs()[:1])
    assert got[0]["pred_ins_masks"].dtype == torch.float32
    assert torch.equal(got[0]["pred_ins_masks"], expected[0]["pred_ins_masks"])
