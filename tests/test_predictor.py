"""SinePredictor on a tiny random model: shapes, dtypes, caching and equality with the model."""
import numpy as np
import pytest
import torch
from detectron2.structures import Instances
from PIL import Image

from sine.config import get_sine_cfg
from sine.engine.predictor import SinePredictor, _resize_image, _resize_masks
from tests.tiny_model import TINY_MODEL_OPTS

TINY = [*TINY_MODEL_OPTS, "MODEL.SINE.TEST.INSTANCE_SCORE_THRESH", "-1.0"]


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return SinePredictor(get_sine_cfg(opts=TINY))


def _scene(h, w, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((3, h, w), bool)
    masks[0, h // 8: h // 3, w // 8: w // 3] = True
    masks[1, h // 2: h - 5, w // 2: w - 5] = True
    masks[2, 2:h // 4, w - w // 4: w - 2] = True
    return image, masks


def test_two_references_two_classes_non_square_targets(predictor):
    (im1, m1), (im2, m2) = _scene(90, 150, 1), _scene(130, 70, 2)
    predictor.set_reference([im1, im2], [m1, m2[:2]], labels=[[3, 3, 7], [7, 3]])
    for h, w in [(60, 200), (210, 90)]:
        target, _ = _scene(h, w, 3)
        out = predictor.predict(target)
        assert out["sem_seg"].shape == (2, h, w) and out["sem_seg"].dtype == torch.float32
        assert out["sem_seg_classes"].tolist() == [3, 7]
        for key in ("id", "instances"):
            inst = out[key]
            assert isinstance(inst, Instances) and inst.image_size == (h, w)
            assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape[1:] == (h, w)
            assert inst.pred_boxes.tensor.shape == (len(inst), 4)
            assert inst.scores.dtype == torch.float32
            assert set(inst.pred_classes.tolist()) <= {3, 7}
        assert sorted(out["id"].pred_ids.tolist()) == [0, 1, 2, 3, 4]  # every reference mask


def test_matches_the_batched_model_forward(predictor):
    (im1, m1), (im2, m2) = _scene(90, 150, 4), _scene(130, 70, 5)
    target, _ = _scene(80, 120, 6)
    predictor.set_reference([im1, im2], [m1, m2], labels=[[0, 1, 1], [1, 0, 0]])
    out = predictor.predict(target)
    refs = []
    for k, (im, m, lab) in enumerate([(im1, m1, [0, 1, 1]), (im2, m2, [1, 0, 0])]):
        t = _resize_image(im, 112)
        inst = Instances(t.shape[-2:])
        inst.gt_masks = _resize_masks(m, tuple(t.shape[-2:]))
        inst.gt_classes = torch.tensor(lab)
        inst.ins_ids = torch.arange(3 * k, 3 * k + 3)
        refs.append({"image": t, "instances": inst})
    t = _resize_image(target, 112)
    with torch.no_grad():
        ref_out = predictor.model([{"image": t, "height": 80, "width": 120, "references": refs}])[0]
    torch.testing.assert_close(out["sem_seg"], ref_out["sem_seg"])
    for key in ("id", "instances"):
        torch.testing.assert_close(out[key].scores, ref_out[key].scores)
        assert torch.equal(out[key].pred_masks, ref_out[key].pred_masks)
        assert torch.equal(out[key].pred_classes, ref_out[key].pred_classes)


def test_reference_features_are_computed_once(predictor, monkeypatch):
    image, masks = _scene(100, 100, 7)
    predictor.set_reference(image, masks)
    calls = []
    encode = predictor.model.encode
    monkeypatch.setattr(predictor.model, "encode", lambda x: calls.append(len(x)) or encode(x))
    for seed in range(3):
        predictor.predict(_scene(64, 96, seed)[0])
    assert calls == [1, 1, 1]  # the target only, never the reference again


def test_bad_inputs_have_clear_errors(predictor, tmp_path):
    image, masks = _scene(50, 60, 8)
    with pytest.raises(ValueError, match="same height and width"):
        predictor.set_reference(image, masks[:, :40])
    empty = masks.copy()
    empty[1] = False
    with pytest.raises(ValueError, match="empty"):
        predictor.set_reference(image, empty)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        predictor.set_reference(str(bad), masks)
    with pytest.raises(ValueError, match="RGB"):
        predictor.set_reference(np.zeros((50, 60, 5), np.uint8), masks)


def test_paths_work_like_arrays(predictor, tmp_path):
    image, masks = _scene(70, 50, 9)
    Image.fromarray(image).save(tmp_path / "ref.png")
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(tmp_path / "mask.png")
    predictor.set_reference(str(tmp_path / "ref.png"), str(tmp_path / "mask.png"))
    from_path = predictor.predict(str(tmp_path / "ref.png"))
    predictor.set_reference(image, masks[0])
    from_array = predictor.predict(image)
    torch.testing.assert_close(from_path["sem_seg"], from_array["sem_seg"])
