"""The inference surface (sine.modeling.in_context) on a tiny SINE: what ``segment`` decides
from ``outputs``, float32 pooling, and that every caller (predictor, video predictor, FSOD
segmenter) goes through ``segment`` and so gets the autocast and fast post-processing settings."""
import contextlib

import numpy as np
import pytest
import torch
from detectron2.structures import Instances

from inference_fsod.model import PrototypeInstanceSegmenter
from sine.config import get_sine_cfg
from sine.engine.predictor import InContextPredictor, SinePredictor
from sine.engine.video_predictor import VideoPredictor
from sine.modeling import postprocessing
from sine.modeling.in_context import (
    ALL_OUTPUTS,
    ImageGeometry,
    InContextSegmenter,
    check_outputs,
    select_features,
)
from sine.modeling.meta_arch import sine_model
from sine.modeling.meta_arch.sine_model import SINEReferenceTokens
from tests.tiny_model import TINY_MODEL_OPTS

TINY = [*TINY_MODEL_OPTS, "MODEL.SINE.TEST.INSTANCE_SCORE_THRESH", "-1.0",
        "MODEL.SINE.VOS.SHORT_SIDE", "40"]
S = 112


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return InContextPredictor(get_sine_cfg(opts=TINY))


def _image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _masks(h, w):
    masks = np.zeros((3, h, w), bool)
    masks[0, 5:30, 5:40] = masks[1, 40:h - 3, 30:w - 3] = masks[2, 2:20, w - 25:w - 2] = True
    return masks


def _tokens_and_target(predictor, seed=0):
    model = predictor.model
    tokens = predictor.set_reference([_image(90, 110, seed)], [_masks(90, 110)],
                                     labels=[[2, 5, 2]])
    target = torch.from_numpy(_image(84, 112, seed + 1)).permute(2, 0, 1).contiguous()
    with torch.no_grad():
        features = model.encode(model.preprocess_image(target, S)[None])
    return tokens, features, ImageGeometry((S, S), (84, 112), (120, 160))


def test_sine_is_an_in_context_segmenter_and_the_predictor_keeps_its_former_name(predictor):
    assert isinstance(predictor.model, InContextSegmenter)
    assert SinePredictor is InContextPredictor
    assert not hasattr(InContextPredictor, "predict_batch")


def test_id_only_request_decodes_the_id_queries_alone_with_the_same_results(predictor,
                                                                             monkeypatch):
    tokens, features, geometry = _tokens_and_target(predictor)
    model = predictor.model
    decoder = model.transformer_decoder
    seen = []
    forward_tokens = decoder.forward_tokens
    monkeypatch.setattr(decoder, "forward_tokens", lambda *a, **k: seen.append(k["id_only"])
                        or forward_tokens(*a, **k))
    with torch.no_grad():
        full = model.segment(features, tokens, geometry, ALL_OUTPUTS)
        only = model.segment(features, tokens, geometry, {"id"})
    assert seen == [False, True]
    assert set(only) == {"id"} and set(full) == {"id", "instances", "sem_seg", "sem_seg_classes"}
    assert torch.equal(only["id"].pred_ids, full["id"].pred_ids)
    assert torch.equal(only["id"].pred_masks, full["id"].pred_masks)
    torch.testing.assert_close(only["id"].scores, full["id"].scores, atol=1e-5, rtol=0)


def test_forward_is_encode_reference_tokens_segment(predictor):
    model = predictor.model
    g = torch.Generator().manual_seed(3)
    ref = torch.randint(0, 256, (3, 70, 112), dtype=torch.uint8, generator=g)
    tar = torch.randint(0, 256, (3, 112, 90), dtype=torch.uint8, generator=g)
    masks = torch.from_numpy(_masks(70, 112))
    inst = Instances((70, 112), gt_masks=masks, gt_classes=torch.tensor([1, 1, 4]),
                     ins_ids=torch.tensor([7, 8, 9]))
    with torch.no_grad():
        (out,) = model([{"image": tar, "height": 50, "width": 40,
                         "references": [{"image": ref, "instances": inst}]}])
        features = model.encode(torch.stack([model.preprocess_image(tar, S),
                                             model.preprocess_image(ref, S)]))
        padded = torch.nn.functional.pad(masks, (0, 0, 0, S - 70))
        tokens = model.reference_tokens(select_features(features, [1]), [padded],
                                        [torch.tensor([1, 1, 4])], [torch.tensor([7, 8, 9])])
        expected = model.segment(select_features(features, 0), tokens,
                                 ImageGeometry((S, S), (112, 90), (50, 40)),
                                 model.default_outputs())
    assert sorted(out["id"].pred_ids.tolist()) == [7, 8, 9]
    assert torch.equal(out["sem_seg"], expected["sem_seg"])
    for key in ("id", "instances"):
        assert torch.equal(out[key].pred_masks, expected[key].pred_masks)
        assert torch.equal(out[key].scores, expected[key].scores)


def test_outputs_are_validated_with_clear_errors(predictor):
    tokens, features, geometry = _tokens_and_target(predictor)
    with pytest.raises(ValueError, match="unknown output kind"):
        predictor.model.segment(features, tokens, geometry, {"panoptic"})
    with pytest.raises(ValueError, match="does not produce"):
        check_outputs({"sem_seg"}, frozenset({"id"}))


def test_pooling_is_float32_under_autocast(predictor):
    model = predictor.model
    tokens, _, _ = _tokens_and_target(predictor)
    refs = torch.from_numpy(_image(90, 110, 0)).permute(2, 0, 1).contiguous()
    masks = torch.nn.functional.pad(torch.from_numpy(_masks(90, 110)), (0, S - 110, 0, S - 90))
    with torch.no_grad():
        features = model.encode(model.preprocess_image(refs, S)[None])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.reference_tokens({"neck": features["neck"].bfloat16()}, [masks],
                                         [torch.tensor([2, 5, 2])])
        fp32 = model.reference_tokens({"neck": features["neck"].bfloat16().float()}, [masks],
                                      [torch.tensor([2, 5, 2])])
    assert low.id_tokens.dtype == low.sem_tokens.dtype == torch.float32
    assert torch.equal(low.id_tokens, fp32.id_tokens)
    assert torch.equal(low.sem_tokens, fp32.sem_tokens)


@pytest.fixture
def surface_spy(predictor, monkeypatch):
    """Records, per ``segment`` call, its outputs and whether the model's autocast and the
    fast post-processing (ResizedMaskLogits) were used."""
    model = predictor.model
    calls = []
    segment, autocast = model.segment, model._autocast

    def spy_segment(features, tokens, geometry, outputs=ALL_OUTPUTS):
        calls.append({"outputs": frozenset(outputs), "autocast": 0, "resized": 0})
        return segment(features, tokens, geometry, outputs)

    @contextlib.contextmanager
    def spy_autocast():
        if calls:
            calls[-1]["autocast"] += 1
        with autocast():
            yield

    class SpyResized(postprocessing.ResizedMaskLogits):
        def __init__(self, *args):
            calls[-1]["resized"] += 1
            super().__init__(*args)

    monkeypatch.setattr(model, "segment", spy_segment)
    monkeypatch.setattr(model, "_autocast", spy_autocast)
    monkeypatch.setattr(sine_model, "ResizedMaskLogits", SpyResized)
    return calls


def test_predictor_segments_through_the_surface(predictor, surface_spy):
    predictor.set_reference(_image(90, 110, 4), _masks(90, 110))
    predictor.predict(_image(60, 80, 5))
    predictor.predict(_image(60, 80, 6), outputs={"sem_seg"})
    assert [c["outputs"] for c in surface_spy] == [ALL_OUTPUTS, frozenset({"sem_seg"})]
    assert all(c["autocast"] >= 1 and c["resized"] >= 1 for c in surface_spy)


def test_video_predictor_segments_through_the_surface(predictor, surface_spy):
    vp = VideoPredictor(predictor)
    labels = np.zeros((48, 64), np.uint8)
    labels[5:20, 5:20], labels[25:40, 30:50] = 1, 2
    vp.start(_image(48, 64, 7), labels)
    vp.step(_image(48, 64, 8))
    assert [c["outputs"] for c in surface_spy] == [frozenset({"id"})] * 2
    assert all(c["autocast"] >= 1 and c["resized"] == 1 for c in surface_spy)


def test_fsod_segmenter_segments_through_the_surface(predictor, surface_spy):
    tokens = SINEReferenceTokens.from_prototypes(torch.tensor([0, 3]), torch.randn(2, 32))
    segmenter = PrototypeInstanceSegmenter(predictor.model, tokens)
    image = torch.from_numpy(_image(84, 112, 9)).permute(2, 0, 1).contiguous()
    out = segmenter([{"image": image, "height": 42, "width": 56}])[0]["instances"]
    assert out.image_size == (42, 56) and set(out.pred_classes.tolist()) <= {0, 3}
    assert [c["outputs"] for c in surface_spy] == [frozenset({"instances"})]
    assert surface_spy[0]["autocast"] >= 1 and surface_spy[0]["resized"] == 1


def test_segment_takes_one_target_and_sine_tokens(predictor):
    tokens, features, geometry = _tokens_and_target(predictor)
    two = {k: v.repeat(2, 1, 1, 1) for k, v in features.items()}
    with pytest.raises(ValueError, match="one target"):
        predictor.model.segment(two, tokens, geometry, {"id"})
    with pytest.raises(TypeError, match="SINEReferenceTokens"):
        predictor.model.segment(features, object(), geometry, {"id"})
