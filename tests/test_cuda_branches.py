"""The CUDA-only branches of the predictor, the model's bf16 autocast, VOS and FSOD, on CPU.

This machine has no GPU, so each test either pretends CUDA is there (``torch.cuda.is_available``
patched, model placement recorded instead of done) and checks that the CUDA branch is the one
taken, or runs the reduced-precision branch under CPU autocast of the same dtype and checks what
the callers receive. CPU autocast casts fewer ops than CUDA autocast, so the latter is a check of
the callers' handling of low-precision outputs, not a numerical model of the GPU run.
The training branch (DDP on the local GPU, AMPTrainer) is covered in tests/test_train_net.py.
"""
import contextlib
import functools

import numpy as np
import pytest
import torch

from sine.config import get_sine_cfg
from sine.engine.predictor import SinePredictor
from sine.engine.video_predictor import VideoPredictor
from sine.modeling.transformer_decoder.reference_pooling import REFERENCE_POOLING
from tests.tiny_model import TINY_MODEL_OPTS


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return SinePredictor(get_sine_cfg(opts=TINY_MODEL_OPTS))


@pytest.fixture
def placements(cuda_placements):
    """Pretend a GPU exists; ``Module.to(cuda)`` is recorded (module class, device) and skipped."""
    return cuda_placements


def _scene(h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:30, 10:40] = True
    return image, mask


def _pretend_on_cuda(monkeypatch, obj):
    """``obj.device`` reads cuda (its tensors stay on the CPU)."""
    monkeypatch.setattr(type(obj), "device", property(lambda self: torch.device("cuda")))


# ------------------------------------------------------------------ predictor placement
@pytest.mark.parametrize("how", ["config", "argument", "from_config_file"])
def test_predictor_builds_the_model_on_the_gpu_asked_for(placements, how):
    opts = list(TINY_MODEL_OPTS)
    if how == "config":
        SinePredictor(get_sine_cfg(opts=[*opts, "MODEL.DEVICE", "cuda"]))
    elif how == "argument":  # MODEL.DEVICE cpu in the config, the argument wins
        SinePredictor(get_sine_cfg(opts=opts), device="cuda:1")
    else:
        SinePredictor.from_config_file(None, opts=opts, device="cuda")
    assert [p for p in placements if p[0] == "SINE"] == \
        [("SINE", "cuda:1" if how == "argument" else "cuda")]


def test_predictor_on_cpu_never_touches_cuda(placements):
    p = SinePredictor(get_sine_cfg(opts=[*TINY_MODEL_OPTS, "MODEL.DEVICE", "cuda"]), device="cpu")
    assert placements == [] and p.device.type == "cpu" and p.cfg.MODEL.DEVICE == "cpu"


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available here: use MODEL.DEVICE cpu"):
        SinePredictor(get_sine_cfg(opts=[*TINY_MODEL_OPTS, "MODEL.DEVICE", "cuda"]))


# ------------------------------------------------------------------ MODEL.SINE.AUTOCAST_BF16
def test_bf16_autocast_only_for_inference_on_cuda(predictor, monkeypatch):
    model = predictor.model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert isinstance(model._autocast(), contextlib.nullcontext)  # flag off
    monkeypatch.setattr(model, "autocast_bf16", True)
    assert isinstance(model._autocast(), contextlib.nullcontext)  # on CPU: never
    _pretend_on_cuda(monkeypatch, model)
    ctx = model._autocast()
    assert isinstance(ctx, torch.autocast)
    assert (ctx.device, ctx.fast_dtype) == ("cuda", torch.bfloat16)
    model.train()
    try:
        assert isinstance(model._autocast(), contextlib.nullcontext)  # training: AMP's business
    finally:
        model.eval()


def test_bf16_outputs_reach_callers_as_float32_and_bool(predictor, monkeypatch):
    """Predictor, demo drawing and VOS under bf16 autocast give the dtypes they document."""
    from demo.visualize import draw_panels

    image, mask = _scene()
    predictor.set_reference(image, mask)
    fp32 = predictor.predict(image)
    monkeypatch.setattr(predictor.model, "_autocast",
                        lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    linear_dtypes = set()  # the branch really computes in bf16
    hooks = [m.register_forward_hook(lambda mod, a, out: linear_dtypes.add(out.dtype))
             for m in predictor.model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        predictor.set_reference(image, mask)
        out = predictor.predict(image)
    finally:
        for h in hooks:
            h.remove()
    assert linear_dtypes == {torch.bfloat16}
    assert out["sem_seg"].dtype == torch.float32
    torch.testing.assert_close(out["sem_seg"], fp32["sem_seg"], atol=0.1, rtol=0)
    for key in ("id", "instances"):
        assert out[key].pred_masks.dtype == torch.bool and out[key].scores.dtype == torch.float32
    assert set(draw_panels(image, out, 0.7, 0.5)) == {"id", "instances", "semantic"}
    vp = VideoPredictor(predictor)
    vp.start(image, {1: mask})
    result = vp.step(image)
    assert result.masks[1].dtype == bool and result.labels.dtype == np.uint8


# ------------------------------------------------------------------ VOS fp16 autocast
def test_vos_fp16_autocast_only_on_cuda_and_when_enabled(predictor, monkeypatch):
    vp = VideoPredictor(predictor)
    assert vp.use_amp and isinstance(vp._autocast(), contextlib.nullcontext)  # CPU: fp32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _pretend_on_cuda(monkeypatch, vp)
    ctx = vp._autocast()
    assert isinstance(ctx, torch.autocast)
    assert (ctx.device, ctx.fast_dtype) == ("cuda", torch.float16)
    vp.use_amp = False  # MODEL.SINE.VOS.AMP False
    assert isinstance(vp._autocast(), contextlib.nullcontext)


def test_vos_under_fp16_autocast_tracks_with_fp32_pooling(predictor, monkeypatch):
    image, mask = _scene(48, 64, seed=1)
    vp = VideoPredictor(predictor)
    monkeypatch.setattr(vp, "_autocast", lambda: torch.autocast("cpu", dtype=torch.float16))
    pooled = []  # dtype of the object tokens of every step
    vos_pooling = REFERENCE_POOLING["vos"]

    @functools.wraps(vos_pooling)  # keeps its registration attributes (tokens_per)
    def recording_pooling(*args, **kwargs):
        tokens = vos_pooling(*args, **kwargs)
        pooled.append(tokens[0].dtype)
        return tokens

    monkeypatch.setitem(REFERENCE_POOLING, "vos", recording_pooling)
    vp.start(image, {1: mask, 2: ~mask})
    for _ in range(2):
        result = vp.step(image)
    assert set(result.masks) == {1, 2} and all(m.dtype == bool for m in result.masks.values())
    assert pooled and set(pooled) == {torch.float32}  # pooling stays fp32 under autocast


# ------------------------------------------------------------------ FSOD prototypes
def test_fsod_prototypes_follow_the_model_device(predictor, monkeypatch):
    from inference_fsod.model import PrototypeInstanceSegmenter
    from sine.modeling.in_context import ReferenceTokens

    # "meta" stands for the GPU: the buffers must be moved to wherever the model is.
    monkeypatch.setattr(type(predictor.model), "device",
                        property(lambda self: torch.device("meta")))
    tokens = ReferenceTokens(labels=torch.tensor([0, 3]), ids=torch.tensor([0, 1]))
    seg = PrototypeInstanceSegmenter(predictor.model, tokens)
    assert seg.tokens.labels.device.type == "meta" and seg.tokens.ids.device.type == "meta"
    assert tokens.labels.device.type == "cpu"  # the cached tokens themselves stay put
