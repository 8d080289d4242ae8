"""SegIC reproduces the official SegIC code on a golden directory ($SEGIC_GOLDEN_DIR, default
../shared/golden/segic_small): the one-shot path, the VOS run and the training losses and
gradients, with the tolerances of the golden README, at 1 and 2 CPU threads.

Everything is built from the directory's config.json (and the shapes of its weight files), the
weights load through the project's checkpointer, and every size / count comes from the loaded
tensors, so any golden directory in the same format is checked by this file.
"""
import importlib.util
import os
import random

import pytest
import torch
import torch.nn.functional as F

NEEDS_EXTRA = "SegIC needs the segic extra (pip install -e .[segic])"
pytest.importorskip("segment_anything", reason=NEEDS_EXTRA)
pytest.importorskip("transformers", reason=NEEDS_EXTRA)

from detectron2.modeling import META_ARCH_REGISTRY  # noqa: E402

from sine.checkpoint import SINECheckpointer  # noqa: E402
from sine.config import get_sine_cfg  # noqa: E402
from sine.modeling.in_context import ImageGeometry, select_features  # noqa: E402
from sine.modeling.meta_arch.segic_model import SegICPairBatch  # noqa: E402
from sine.modeling.segic import merge_object_logits  # noqa: E402
from tests.segic_golden import (  # noqa: E402
    BASE_CONFIG,
    ROOT,
    build_segic_cfg,
    load_segic_golden,
    pair_image,
    pair_masks,
    pair_names,
    prefixed,
    write_frozen_weights,
)

# Golden README, "Suggested tolerances": float32 maps/embeddings/logits atol ~1e-4 (1-vs-2
# thread noise ~3e-6), losses and gradients rtol ~1e-5; discrete outputs exact; binary masks may
# differ only where |logit| < 1e-4.
ATOL = 1e-4
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
# Gradients that are mathematically zero (attention key biases: softmax removes a per-query
# constant) hold float noise; they are compared against this fraction of the largest gradient.
GRAD_ATOL_OF_MAX = 1e-6
MASK_LOGIT_MARGIN = 1e-4


@pytest.fixture(scope="module")
def golden():
    path = os.environ.get("SEGIC_GOLDEN_DIR",
                          os.path.join(ROOT, "..", "shared", "golden", "segic_small"))
    if not os.path.isfile(os.path.join(path, "config.json")):
        pytest.fail(f"SegIC golden directory not found: {path} (set SEGIC_GOLDEN_DIR)")
    return load_segic_golden(os.path.abspath(path))


@pytest.fixture(scope="module")
def weights(golden, tmp_path_factory):
    return write_frozen_weights(golden, str(tmp_path_factory.mktemp("segic_weights")))


@pytest.fixture(scope="module")
def model(golden, weights):
    cfg = build_segic_cfg(golden, *weights)
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    SINECheckpointer(model).load(golden["state_dict_path"])  # strict: every key must fit
    return model.eval()


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


def close(actual, expected, what, atol=ATOL, rtol=0.0):
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: {m}")


def same_binary(ours, logits, expected, what):
    """Binary masks equal except at pixels whose (recomputed) |logit| is below the margin."""
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} vs {expected.shape}"
    differ = ours != expected
    assert (logits[differ].abs() < MASK_LOGIT_MARGIN).all(), (
        f"{what}: {int(differ.sum())} pixels differ, some with |logit| >= {MASK_LOGIT_MARGIN}")


def pairs_of(golden):
    return sorted({k.split(".")[1] for k in golden["outputs_eval"] if k.startswith("eval.")})


def test_tokenizer_reproduces_the_recorded_clip_ids(golden, model):
    inputs = golden["inputs"]
    ids, mask = model.text_encoder.tokenize(golden["config"]["prompts"])
    assert torch.equal(ids, inputs["text.prompts_input_ids"])
    assert torch.equal(mask, inputs["text.prompts_attention_mask"])


def test_one_shot_matches_official(golden, model, threads):
    inputs = golden["inputs"]
    for pair in pairs_of(golden):
        out = prefixed(golden["outputs_eval"], f"eval.{pair}.")
        ref_masks = pair_masks(inputs, pair, "ref")
        n = ref_masks.shape[0]
        names = pair_names(golden, pair, n)
        with torch.no_grad():
            tar = model.encode(pair_image(model, inputs, pair, "tar")[None])
            ref = model.encode(pair_image(model, inputs, pair, "ref")[None])
            tokens = model.reference_tokens(ref, [ref_masks], [torch.zeros(n, dtype=torch.long)],
                                            names=names)
            dec = model.decode(tar["dinov2"][0], tokens.prototypes, tokens.text_pooled,
                               cross_entity=model.cross_entity_prompt)
        # Official rows: target prompt, reference prompt (equal at inference); ours: per entity.
        prompt = model.prompts_of(names, n)[0]
        ids, mask = model.text_encoder.tokenize([prompt, prompt])
        assert torch.equal(ids, out["text_input_ids"]), pair
        assert torch.equal(mask, out["text_attention_mask"]), pair
        checked = {"text_input_ids", "text_attention_mask", "point_coords", "point_labels",
                   "masks_pred", "ori_size", "final_masks", "final_inter_union"}
        expected = {
            "features_target": tar["dinov2"], "features_reference": ref["dinov2"],
            "text_pooled": tokens.text_pooled, "ref_prototypes": tokens.prototypes[:, 0],
            "visual_token": model.inst_proj(tokens.prototypes[:, 0]),
            "text_token": model.prompt_proj(tokens.text_pooled),
            "similarity_lowres": dec.similarity, "coarse_mask": dec.coarse_mask,
            "sparse_input_texts": dec.instruction_tokens,
            "sparse_embeddings": dec.sparse_embeddings, "dense_embeddings": dec.dense_embeddings,
            "neck": dec.image_embedding, "dense_pe": dec.dense_pe,
            "low_res_logits": dec.low_res_logits, "iou_predictions": dec.iou_predictions,
        }
        for name, ours in expected.items():
            if name in ("text_pooled", "text_token"):
                # Every entity carries the prompt of its image (both official rows).
                assert torch.equal(ours[0:1].expand(n, -1), ours)
                ours = ours[:1].expand(2, -1)
            close(ours.detach(), out[name], f"{pair}.{name}")
        assert set(out) == checked | set(expected), f"{pair}: unchecked outputs"
        assert torch.equal(dec.point_coords, out["point_coords"]), f"{pair}: top-1 points"
        assert torch.equal(dec.point_labels.float(), out["point_labels"]), f"{pair}: labels"

        # Post-processing through the inference surface.
        h, w = out["ori_size"].tolist()
        with torch.no_grad():
            at_input = model.logits_at_input(dec.low_res_logits)[:, :, :h, :w]
            result = model.segment(tar, tokens,
                                   ImageGeometry((model.image_size,) * 2, (h, w),
                                                 tuple(out["final_masks"].shape[-2:])),
                                   outputs={"id", "sem_seg"})
        close(at_input, out["masks_pred"], f"{pair}.masks_pred")
        inst = result["id"]
        same_binary(inst.pred_masks, inst.pred_mask_logits, out["final_masks"][:, 0],
                    f"{pair}.final_masks")
        raw = inputs[f"{pair}_tar_masks"]
        inter = (inst.pred_masks & raw).flatten(1).sum(1)
        union = (inst.pred_masks | raw).flatten(1).sum(1)
        if torch.equal(inst.pred_masks, out["final_masks"][:, 0]):
            assert torch.equal(torch.stack([inter, union], 1), out["final_inter_union"])
        assert torch.equal(inst.pred_ids, tokens.ids)
        assert result["sem_seg"].shape == (1, *out["final_masks"].shape[-2:])


def test_vos_matches_official(golden, model, threads):
    inputs, out = golden["inputs"], golden["outputs_vos"]
    S = model.image_size
    frames = inputs["vos.images"][0]
    h, w = inputs["vos.ori_size"][0].tolist()
    first = inputs["vos.inst_masks"][0]
    n = first.shape[0]
    ids = inputs["vos.inst_ids"][0].long()
    labels = torch.zeros(n, dtype=torch.long)
    out_size = tuple(inputs["vos_frames_uint8_thwc"].shape[1:3])
    geometry = ImageGeometry((S, S), (h, w), out_size)
    with torch.no_grad():
        feats = model.encode(torch.stack([model.preprocess_image(f[:, :h, :w]) for f in frames]))
    close(feats["dinov2"], out["vos.features"], "vos.features")
    memory_frames, memory_masks, seg = [0], [first.bool()], []
    for t in range(frames.shape[0]):
        o = prefixed(out, f"vos.frame{t}.")
        with torch.no_grad():
            tokens = model.reference_tokens(
                select_features(feats, memory_frames), memory_masks, [labels] * len(memory_masks),
                [ids] * len(memory_masks), pooling="vos")
            dec = model.decode(feats["dinov2"][t], tokens.prototypes, tokens.text_pooled,
                               cross_entity=model.cross_entity_prompt,
                               negative_points=model.vos_negative_points,
                               eps=model.vos_similarity_eps)
        close(tokens.text_pooled, out["vos.text_pooled"][t:t + 1].expand(n, -1),
              f"frame{t}.text_pooled")
        for name, ours in (("memory_prototypes", tokens.prototypes),
                           ("similarity_lowres", dec.similarity),
                           ("coarse_top1_value", dec.top1_value),
                           ("sparse_input_texts", dec.instruction_tokens),
                           ("sparse_embeddings", dec.sparse_embeddings),
                           ("dense_embeddings", dec.dense_embeddings)):
            close(ours, o[name], f"frame{t}.{name}", rtol=1e-4)
        assert torch.equal(dec.point_coords, o["point_coords"]), f"frame{t}: points"
        assert torch.equal(dec.point_labels.long(), o["point_labels"]), f"frame{t}: labels"
        if t == 0:
            # Frame 0 is not decoded: the resized ground truth, cropped, back to the original
            # size (slightly dilated by the bilinear resize), merged like predictions.
            gt = F.interpolate(first[None, :, :h, :w].float(), size=out_size, mode="bilinear",
                               align_corners=False)[0]
            seg.append(merge_object_logits(gt))
            continue
        close(dec.low_res_logits, o["low_res_logits"], f"frame{t}.low_res_logits")
        with torch.no_grad():
            result = model.segment(select_features(feats, [t]), tokens, geometry, {"id"})
        logits = result["id"].pred_mask_logits
        seg.append(merge_object_logits(logits))
        margin = logits.abs().min(0).values
        differ = seg[-1] != out["vos.seg_result"][t]
        assert (margin[differ] < MASK_LOGIT_MARGIN).all(), f"frame{t}: merged segmentation"
        memory_frames.append(t)
        memory_masks.append(result["id"].pred_masks_input)
    assert len(seg) == out["vos.seg_result"].shape[0]


class Replay:
    """Stand-in for python's ``random`` that returns the recorded draws in order."""

    def __init__(self, values):
        self.values = list(values)
        self.used = 0

    def random(self):
        assert self.used < len(self.values), "more python random draws than recorded"
        self.used += 1
        return self.values[self.used - 1]


def train_batch(golden, model):
    inputs = golden["inputs"]
    order = golden["config"]["checks"]["train"]["batch"]
    return SegICPairBatch(
        tar_images=torch.stack([pair_image(model, inputs, p, "tar") for p in order]),
        ref_images=torch.stack([pair_image(model, inputs, p, "ref") for p in order]),
        tar_masks=[pair_masks(inputs, p, "tar") for p in order],
        ref_masks=[pair_masks(inputs, p, "ref") for p in order],
        class_names=[None if bool(inputs[f"pair.{p}.is_inst"])
                     else golden["config"]["pairs"][p]["class_name"] for p in order],
    )


def test_training_losses_and_gradients_match_official(golden, model, threads, monkeypatch):
    out = golden["outputs_train"]
    batch = train_batch(golden, model)
    recorded_rand = [out[k] for k in sorted(k for k in out if k.startswith("train.rng."))]
    real_rand = torch.rand

    def replay_rand(*size, **kwargs):
        assert recorded_rand, "more torch.rand calls than recorded"
        value = recorded_rand.pop(0)
        assert tuple(value.shape) == tuple(torch.Size(size if len(size) > 1 else size[0])), (
            f"torch.rand{size} where the official code drew {tuple(value.shape)}")
        return value.to(kwargs.get("device") or "cpu").clone()

    python_draws = Replay(out["train.python_random"].tolist())
    record = {}
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        monkeypatch.setattr(torch, "rand", replay_rand)
        losses = model.losses(batch, rng=python_draws, record=record)
        monkeypatch.setattr(torch, "rand", real_rand)
        total = sum(losses.values())
        total.backward()
    finally:
        model.eval()
    assert not recorded_rand and python_draws.used == len(python_draws.values)

    # Losses: the dict holds each pass's loss halved (their sum is the official total).
    close(total.detach(), out["train.loss_total"], "loss_total", atol=0, rtol=LOSS_RTOL)
    for name, value in losses.items():
        close(2 * value.detach(), out[f"train.loss.{name}"], name, atol=0, rtol=LOSS_RTOL)
    for p, n in enumerate(record["num_masks"]):
        assert n == int(out[f"train.loss_masks.{p}.num_masks"])
        suffix = "" if p == 0 else "_reverse"
        for name in ("loss_mask", "loss_dice"):
            close(2 * losses[name + suffix].detach(), out[f"train.loss_masks.{p}.{name}"],
                  f"pass {p} {name}", atol=0, rtol=LOSS_RTOL)

    # Prompts, text and features of the 2B images (targets first).
    ids, _ = model.text_encoder.tokenize(record["prompts"])
    assert torch.equal(ids, out["train.text_input_ids"])
    close(record["text_pooled"], out["train.text_pooled"], "text_pooled")
    close(record["features"], out["train.features"], "features")

    # Every decoder call, forward pass first.
    calls = record["calls"]
    assert len(calls) == len({k.split(".")[1] for k in out if k.startswith("train.call")})
    for j, dec in enumerate(calls):
        o = prefixed(out, f"train.call{j}.")
        assert torch.equal(dec.point_coords, o["point_coords"]), f"call{j}: top-1 points"
        assert torch.equal(dec.point_labels.float(), o["point_labels"]), f"call{j}: labels"
        boxes = dec.boxes if dec.boxes is not None else torch.zeros(0, 4)
        assert torch.equal(boxes, o["boxes"]), f"call{j}: box prompts"
        for name, ours in (("similarity_lowres", dec.similarity),
                           ("coarse_top1_value", dec.top1_value),
                           ("sparse_input_texts", dec.instruction_tokens),
                           ("sparse_embeddings", dec.sparse_embeddings),
                           ("dense_embeddings", dec.dense_embeddings),
                           ("low_res_logits", dec.low_res_logits),
                           ("iou_predictions", dec.iou_predictions)):
            close(ours.detach(), o[name], f"call{j}.{name}", rtol=1e-4)
    forward_logits = torch.cat([c.low_res_logits for c in calls[:len(batch.tar_masks)]])
    close(forward_logits.detach(), out["train.masks_pred_forward"], "masks_pred_forward")
    context_logits = F.interpolate(forward_logits.detach(), size=batch.tar_images.shape[-2:],
                                   mode="bilinear", align_corners=False)[:, 0]
    same_binary(record["reverse_context_masks"], context_logits,
                out["train.reverse_context_masks"][:, 0], "reverse_context_masks")

    # Gradients of the official total loss.
    grads = prefixed(out, "grad.")
    largest = max(g.abs().max() for g in grads.values())
    without = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name not in grads:
            assert param.grad is None, f"{name} gets a gradient the official model does not"
            without.append(name)
            continue
        assert param.grad is not None, f"{name}: no gradient"
        close(param.grad, grads[name], f"grad.{name}", atol=GRAD_ATOL_OF_MAX * largest,
              rtol=GRAD_RTOL)
    assert sorted(without) == sorted(golden["config"]["checks"]["train"]["params_without_grad"])
    model.zero_grad(set_to_none=True)


def test_training_consumes_the_rngs_in_official_order(golden, model):
    """Seeded as the official run (no injection), the model makes the same draws."""
    seeds = golden["config"]["seeds"]
    out = golden["outputs_train"]
    batch = train_batch(golden, model)
    draws = []

    class Recording(random.Random):
        def random(self):
            draws.append(super().random())
            return draws[-1]

    torch.manual_seed(seeds["train_torch"])
    model.train()
    try:
        with torch.no_grad():
            losses = model.losses(batch, rng=Recording(seeds["train_python"]))
    finally:
        model.eval()
    assert draws == out["train.python_random"].tolist()
    close(sum(losses.values()), out["train.loss_total"], "loss_total", atol=0, rtol=LOSS_RTOL)


def test_full_size_keys_equal_the_released_checkpoint(golden):
    """A default-config SegIC (released recipe) expects exactly the official checkpoint keys."""
    listing = os.path.join(golden["dir"], "full_size_state_dict_keys.txt")
    expected = {}
    with open(listing) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, shape, _ = line.rstrip("\n").split("\t")
            expected[name] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    cfg = get_sine_cfg(BASE_CONFIG, ["MODEL.SEGIC.USE_TEXT", False])
    with torch.device("meta"):
        full = META_ARCH_REGISTRY.get("SegIC")(cfg)
    ours = {k: tuple(v) for k, v in full.official_state_dict_keys().items()}
    assert ours == expected


def test_wrong_state_dict_is_refused_with_the_keys(golden, model, tmp_path):
    state = torch.load(golden["state_dict_path"], map_location="cpu")
    state.pop("inst_proj.bias")
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    state["prompt_proj.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        SINECheckpointer(model).load(str(path))
    message = str(err.value)
    for key in ("inst_proj.bias", "mask_decoder.extra.weight", "prompt_proj.weight"):
        assert key in message


def test_convert_tool_checks_and_writes_the_official_checkpoint(golden, model, weights, tmp_path):
    path = os.path.join(ROOT, "tools", "convert_official_checkpoint.py")
    spec = importlib.util.spec_from_file_location("convert_official_checkpoint", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    dinov2, clip_dir = weights
    config = tmp_path / "segic.yaml"
    config.write_text(build_segic_cfg(golden, dinov2, clip_dir).dump())
    output, empty = tmp_path / "segic.pth", tmp_path / "empty_prompt.pt"
    assert tool.main(["--config-file", str(config), "--input", golden["state_dict_path"],
                      "--output", str(output), "--dinov2-weights", dinov2,
                      "--clip-text-dir", clip_dir, "--empty-prompt-embedding", str(empty)]) == 0
    converted = torch.load(output, map_location="cpu")["model"]
    official = torch.load(golden["state_dict_path"], map_location="cpu")
    assert all(torch.equal(converted[k], v) for k, v in official.items())
    assert sorted(set(converted) - set(official)) == sorted(
        "encoder." + k for k in golden["frozen"]["dinov2"])
    # The saved empty-prompt embedding is CLIP's: text off + that file = the official "" token.
    with torch.no_grad():
        torch.testing.assert_close(torch.load(empty), model.text_encoder([""])[0])
    bad = dict(official)
    bad.pop("neck.0.weight")
    torch.save(bad, tmp_path / "bad.pth")
    assert tool.main(["--config-file", str(config), "--input", str(tmp_path / "bad.pth"),
                      "--output", str(tmp_path / "out.pth")]) == 1
