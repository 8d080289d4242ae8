"""sine reproduces the official SINE implementation (inference): features, raw decoder outputs,
internal intermediates and the three post-processed results of a golden directory.

The model is built from the golden config.json alone and loads the official-format state dict
without renaming; inputs are given in sine's format (uint8 images, un-padded masks).
"""
import glob
import logging
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from golden_utils import (
    build_golden_cfg,
    build_golden_model,
    golden_batched_inputs,
    golden_pairs,
    load_golden,
)

from sine.modeling.postprocessing import (
    identity_inference,
    instance_inference,
    resize_mask_logits,
)

ATOL = 1e-4  # float32 reimplementation vs official (their 1-vs-2-thread noise is 1e-5)
PRED_KEYS = ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks")


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_golden(golden_dir)


@pytest.fixture(scope="module", params=[(True, "dinov2"), (False, "dinov2"), (True, "timm_dinov2")],
                ids=["fast", "reference", "timm-fast"])
def model(golden_dir, request):
    """The golden model on the fast path (MODEL.SINE.FAST_INFERENCE, default) and on the
    official computation, and with the DINOv2 built on timm's modules: every golden check runs
    for each. (timm's unfused attention equals the hand-written one: tests/test_timm_vit.py.)"""
    fast, vit = request.param
    model = build_golden_model(golden_dir, ["MODEL.DINOV2.VIT", vit])
    model.set_fast_inference(fast)
    return model


@pytest.fixture(scope="module")
def run(model, golden_dir):
    """Raw outputs, features and post-processed results for the whole golden batch."""
    with torch.no_grad():
        raw, features = model.forward_raw(golden_batched_inputs(golden_dir))
        results = model(golden_batched_inputs(golden_dir))
    return raw, features, results


def assert_close(actual, expected, name, atol=ATOL):
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} vs {expected.shape}"
    diff = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    assert diff <= atol, f"{name}: max |diff| {diff:.3g} > {atol}"


def test_official_state_dict_loads_without_renaming(model, golden):
    ours = model.state_dict()
    assert set(ours) == set(golden["state_dict"])
    for k, v in golden["state_dict"].items():
        assert tuple(ours[k].shape) == tuple(v.shape), k


def test_official_flat_file_loads_with_detection_checkpointer(golden_dir, golden, caplog):
    """The released-format flat file goes through detectron2 with no missing/unexpected keys."""
    from detectron2.modeling import build_model

    model = build_model(build_golden_cfg(golden_dir))
    path = glob.glob(os.path.join(golden_dir, "*state_dict*.pth"))[0]
    with caplog.at_level(logging.WARNING):
        DetectionCheckpointer(model).load(path)
    assert "not found in the checkpoint" not in caplog.text
    assert "not used by the model" not in caplog.text
    for k, v in golden["state_dict"].items():
        assert torch.equal(model.state_dict()[k], v), k


def test_encoder_and_neck_features(run, golden):
    _, features, _ = run
    out = golden["outputs_eval"]
    for ours, theirs in [("tar_encoder", "tar_enc_embs"), ("ref_encoder", "ref_enc_embs"),
                         ("tar_neck", "tar_neck"), ("ref_neck", "ref_neck")]:
        assert_close(features[ours], out[f"features.{theirs}"], ours)


def test_raw_decoder_outputs_all_levels(run, golden):
    raw, _, _ = run
    out = golden["outputs_eval"]
    assert len(raw) == len(golden_pairs(golden["inputs"]))
    for b, r in enumerate(raw):
        for key in ("ref_id_labels", "ref_sem_labels"):
            assert torch.equal(r[key], out[f"raw.{b}.{key}"]), key
        for key in PRED_KEYS + ("id_hidden_states", "ins_hidden_states"):
            assert_close(r[key], out[f"raw.{b}.{key}"], f"raw.{b}.{key}")
        num_aux = len({k.split(".")[2] for k in out if k.startswith(f"raw.{b}.aux")})
        assert len(r["aux_outputs"]) == num_aux
        for i, aux in enumerate(r["aux_outputs"]):
            for key in PRED_KEYS:
                assert_close(aux[key], out[f"raw.{b}.aux{i}.{key}"], f"raw.{b}.aux{i}.{key}")


def test_semantic_results(run, golden):
    _, _, results = run
    out = golden["outputs_eval"]
    for b, res in enumerate(results):
        assert_close(res["sem_seg"], out[f"semantic.{b}.sem_seg"], f"semantic.{b}")
        assert torch.equal(res["sem_seg_classes"], out[f"raw.{b}.ref_sem_labels"][0])


def _check_kept_instances(ours, out, prefix, mask_logits):
    """Exact labels / kept set (after sorting by score); masks differ only where |logit| < 1e-4."""
    order = out[prefix + ".order_by_score_desc"]
    scores = out[prefix + ".scores"][order]
    assert len(ours) == len(scores), f"{prefix}: kept {len(ours)} vs {len(scores)}"
    assert ours.pred_classes.dtype == torch.int64
    assert torch.equal(ours.pred_classes, out[prefix + ".pred_classes"][order].long())
    assert_close(ours.scores, scores, prefix + ".scores", atol=1e-5)
    assert tuple(ours.image_size) == tuple(out[prefix + ".image_size"].tolist())
    theirs = out[prefix + ".pred_masks"][order]
    for k, mask in enumerate(ours.pred_masks):
        source = [q for q in range(len(mask_logits)) if torch.equal(mask_logits[q] > 0, mask)]
        assert source, f"{prefix}[{k}]: mask is not the binarised logits of any query"
        uncertain = mask_logits[source[0]].abs() < 1e-4
        assert not ((mask != theirs[k]) & ~uncertain).any(), f"{prefix}[{k}]: mask pixels differ"


def test_instance_results(run, golden):
    raw, _, results = run
    out = golden["outputs_eval"]
    for b, res in enumerate(results):
        logits = resize_mask_logits(raw[b]["pred_ins_masks"][0], _padded(golden),
                                    _content(golden, b), _out_size(golden, b))
        _check_kept_instances(res["instances"], out, f"instance.{b}.ins_seg", logits)


def test_identity_results(run, golden):
    raw, _, results = run
    out = golden["outputs_eval"]
    inputs = golden["inputs"]
    for b, (res, pair) in enumerate(zip(results, golden_pairs(inputs))):
        logits = resize_mask_logits(raw[b]["pred_id_masks"][0], _padded(golden),
                                    _content(golden, b), _out_size(golden, b))
        _check_kept_instances(res["id"], out, f"identity.{b}.id_seg", logits)
        ref_ids = inputs[f"{pair}_ref_ins_ids"]
        ref_classes = inputs[f"{pair}_ref_gt_classes"]
        for cls, id_ in zip(res["id"].pred_classes, res["id"].pred_ids):
            assert ref_classes[ref_ids == id_].item() == cls.item()


def test_keep_all_scores_and_classes(run, golden, model):
    """VOS-style post-processing (threshold -1e9) keeps every candidate, like the official."""
    raw, _, _ = run
    out = golden["outputs_eval"]
    for b, r in enumerate(raw):
        sizes = (_padded(golden), _content(golden, b), _out_size(golden, b))
        ins = instance_inference(r["pred_ins_logits"][0],
                                 resize_mask_logits(r["pred_ins_masks"][0], *sizes),
                                 r["ref_sem_labels"][0], model.test_topk_per_image, -1e9)
        ids = identity_inference(r["pred_id_logits"][0],
                                 resize_mask_logits(r["pred_id_masks"][0], *sizes),
                                 r["ref_id_labels"][0], torch.arange(r["ref_id_labels"].shape[1]),
                                 model.test_topk_per_image, -1e9)
        for ours, name in ((ins, "instance_keepall"), (ids, "identity_keepall")):
            scores = out[f"{name}.{b}.scores"]
            order = torch.argsort(scores, descending=True)
            assert_close(ours.scores, scores[order], name, atol=1e-5)
            assert torch.equal(ours.pred_classes, out[f"{name}.{b}.pred_classes"][order].long())


def test_output_contract(run, golden):
    _, _, results = run
    for b, res in enumerate(results):
        height, width = _out_size(golden, b)
        assert res["sem_seg"].shape[-2:] == (height, width)
        assert res["sem_seg_classes"].dtype == torch.int64
        assert torch.equal(res["sem_seg_classes"], res["sem_seg_classes"].sort().values)
        for key in ("instances", "id"):
            inst = res[key]
            assert inst.image_size == (height, width)
            assert inst.pred_masks.dtype == torch.bool
            assert inst.pred_boxes.tensor.shape == (len(inst), 4)
            assert torch.all(inst.scores[:-1] >= inst.scores[1:])
        assert res["id"].pred_ids.dtype == torch.int64


def test_modes_follow_config_flags(model, golden_dir):
    model.semantic_on, model.instance_on = False, False
    try:
        with torch.no_grad():
            results = model(golden_batched_inputs(golden_dir)[:1])
    finally:
        model.semantic_on, model.instance_on = True, True
    assert set(results[0]) == {"id"}


# ---------------------------------------------------------------- internal intermediates (pair A)
@pytest.fixture(scope="module")
def trace_run(model, golden_dir):
    """Record our intermediates for the first pair alone (the official trace's setting)."""
    records, hooks = {}, []
    dec, enc = model.transformer_decoder, model.image_encoder.encoder

    def save(name):
        def hook(module, args, kwargs, output):
            records.setdefault(name, []).append((args, kwargs, output))
        return hook

    named = {"patch_embed": enc.patch_embed, "mask_feat_layer": dec.mask_feat_layer,
             "pe_layer": dec.pe_layer, "fusion": dec.fusion_layers[0]}
    named.update({f"blocks.{i}": blk for i, blk in enumerate(enc.blocks)})
    for name, module in named.items():
        hooks.append(module.register_forward_hook(save(name), with_kwargs=True))
    for i, layer in enumerate(dec.transformer_layers):
        hooks.append(layer.register_forward_pre_hook(
            lambda m, args, i=i: records.setdefault(f"layer{i}.in", []).append(
                [a.clone() if torch.is_tensor(a) else [t.clone() for t in a] for a in args])))
        hooks.append(layer.register_forward_hook(save(f"layer{i}"), with_kwargs=True))
    originals = {}
    for method in ("forward_prediction_heads", "apply_gaussian_kernel"):
        originals[method] = getattr(dec, method)

        def wrapper(*args, _name=method, **kwargs):
            result = originals[_name](*args, **kwargs)
            cloned = tuple(r.clone() if torch.is_tensor(r) else r for r in result) \
                if isinstance(result, tuple) else result
            records.setdefault(_name, []).append((args, cloned))
            return result
        setattr(dec, method, wrapper)
    try:
        with torch.no_grad():
            model.forward_raw(golden_batched_inputs(golden_dir)[:1])
    finally:
        for h in hooks:
            h.remove()
        for method in originals:
            delattr(dec, method)
    return records


def test_trace_encoder(trace_run, golden):
    tr = golden["trace"]
    # We encode [target, reference] in one batch; the official order is #0 ref, #1 target.
    for call, b in (("#0", 1), ("#1", 0)):
        assert_close(trace_run["patch_embed"][0][2][b:b + 1], tr[f"encoder.patch_embed{call}.out"],
                     "patch_embed" + call)
        for i in range(len([k for k in tr if k.startswith("encoder.blocks.") and call in k])):
            name = f"encoder.blocks.{i}{call}.out"
            assert_close(trace_run[f"blocks.{i}"][0][2][b:b + 1], tr[name], name)


def test_trace_pos_embed_interpolation(model, golden):
    expected = golden["trace"]["encoder.interpolate_pos_encoding#0.out"]
    grid = int(round((expected.shape[1] - 1) ** 0.5))
    with torch.no_grad():
        ours = model.image_encoder.encoder.interpolate_pos_encoding(grid, grid)
    assert_close(ours, expected, "interpolate_pos_encoding")


def test_trace_fusion_and_positional_prior(trace_run, golden):
    tr = golden["trace"]
    assert_close(trace_run["mask_feat_layer"][0][2], tr["decoder.mask_feat_layer#0.out"], "mask")
    assert_close(trace_run["pe_layer"][0][2], tr["decoder.pe_layer#0.out"], "pe_layer")
    (ref_in, img_in), _, ref_out = trace_run["fusion"][0]
    assert_close(ref_in, tr["decoder.fusion_layers.0#0.in.output"], "fusion in (ref)")
    assert_close(img_in, tr["decoder.fusion_layers.0#0.in.image_feat"], "fusion in (image)")
    assert_close(ref_out, tr["decoder.fusion_layers.0#0.out"], "fusion out (ref)")
    assert_close(trace_run["fusion"][1][2], tr["decoder.fusion_layers.0#1.out"], "fusion out (img)")
    (corr, _), gauss = trace_run["apply_gaussian_kernel"][0]
    assert_close(corr, tr["decoder.apply_gaussian_kernel#0.arg0"], "gaussian in")
    assert_close(gauss, tr["decoder.apply_gaussian_kernel#0.out"], "gaussian out")


def test_trace_prediction_heads_and_attention_masks(trace_run, golden):
    tr = golden["trace"]
    for k, (_, (pred, attn_mask)) in enumerate(trace_run["forward_prediction_heads"]):
        p = f"decoder.forward_prediction_heads#{k}.out"
        assert_close(pred["pred_id_logits"], tr[p + ".0.0"], p + ".id_logits")
        assert_close(pred["pred_ins_logits"], tr[p + ".0.1"], p + ".ins_logits")
        assert_close(pred["id_hidden_states"], tr[p + ".3.0"], p + ".id_embed")
        assert_close(pred["ins_hidden_states"], tr[p + ".3.1"], p + ".ins_embed")
        if k == 0:  # the only mask the official decoder uses
            assert torch.equal(attn_mask, tr[p + ".2"]), p + ".attn_mask"


def test_trace_decoder_layers(trace_run, golden):
    tr = golden["trace"]
    for i in range(len([k for k in trace_run if k.startswith("layer") and k.endswith(".in")])):
        p = f"decoder.transformer_layers.{i}#0"
        output, query_embed, image_feat, image_pe, sa_mask, ca_mask = trace_run[f"layer{i}.in"][0]
        for s in range(3):
            assert_close(output[s], tr[f"{p}.in.output.{s}"], f"{p}.in.output.{s}")
            assert_close(query_embed[s], tr[f"{p}.in.query_embed.{s}"], f"{p}.in.query_embed.{s}")
            assert_close(trace_run[f"layer{i}"][0][2][s], tr[f"{p}.out.{s}"], f"{p}.out.{s}")
        if f"{p}.in.image_feat" in tr:
            assert_close(image_feat, tr[f"{p}.in.image_feat"], f"{p}.in.image_feat")
            assert_close(image_pe, tr[f"{p}.in.image_pe"], f"{p}.in.image_pe")
        assert torch.equal(sa_mask, tr[f"{p}.in.sa_attn_mask"]), f"{p}.sa_attn_mask"
        assert torch.equal(ca_mask, tr[f"{p}.in.ca_attn_mask"]), f"{p}.ca_attn_mask"


def test_refresh_cross_attn_mask_option_changes_only_later_blocks(model, golden_dir, run):
    """Official: the first mask drives every block; the option refreshes it (Mask2Former)."""
    raw, _, _ = run
    dec = model.transformer_decoder
    if len(dec.transformer_layers) < 2:
        pytest.skip("needs at least two decoder blocks")
    dec.refresh_cross_attn_mask = True
    try:
        with torch.no_grad():
            refreshed, _ = model.forward_raw(golden_batched_inputs(golden_dir))
    finally:
        dec.refresh_cross_attn_mask = False
    for key in PRED_KEYS:  # blocks 0 and 1 see the same mask either way
        assert torch.equal(refreshed[0]["aux_outputs"][1][key], raw[0]["aux_outputs"][1][key])
    assert not torch.allclose(refreshed[0]["pred_ins_masks"], raw[0]["pred_ins_masks"])


# ---------------------------------------------------------------- golden sizes
def _padded(golden):
    return tuple(golden["inputs"][f"{golden_pairs(golden['inputs'])[0]}_tar_image"].shape[-2:])


def _content(golden, b):
    pair = golden_pairs(golden["inputs"])[b]
    return tuple(golden["inputs"][f"{pair}_tar_image_size"].tolist())


def _out_size(golden, b):
    pair = golden_pairs(golden["inputs"])[b]
    return tuple(golden["inputs"][f"{pair}_tar_height_width"].tolist())
