"""The model-agnostic callers (predictor, video predictor, FSS suite) run a SegIC config (tiny
random weights, synthetic images)."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.structures import Instances

pytest.importorskip("segment_anything", reason="SegIC needs the segic extra")

from sine.config import get_sine_cfg  # noqa: E402
from sine.data.synthetic import THING_CATEGORIES  # noqa: E402
from sine.data.synthetic.scenes import render_scene  # noqa: E402
from sine.data.synthetic.videos import render_video  # noqa: E402
from sine.engine.predictor import (  # noqa: E402
    InContextPredictor,
    _resize_image,
    _resize_masks,
)
from sine.engine.video_predictor import VideoPredictor  # noqa: E402
from sine.modeling.meta_arch.segic_model import SegIC  # noqa: E402
from tests.test_fss_suite import synthetic_root  # noqa: E402,F401  (fixture)
from tests.tiny_model import TINY_SEGIC_OPTS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "segic", "Base-SegIC.yaml")


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return InContextPredictor(get_sine_cfg(BASE, TINY_SEGIC_OPTS))


def scene(seed, categories):
    rendered = render_scene(np.random.default_rng(seed), [(c, 1) for c in categories])
    return rendered.image, rendered.things


def test_predictor_gives_one_mask_per_reference_entity_and_the_class_union(predictor):
    assert isinstance(predictor.model, SegIC)
    cats = [c["id"] for c in THING_CATEGORIES[:2]]
    image, things = scene(0, cats)
    labels = [cats.index(c) for c, _ in things]
    predictor.set_reference(image, [m for _, m in things], labels=labels)
    target, _ = scene(1, cats)
    h, w = target.shape[:2]
    out = predictor.predict(target)
    assert set(out) == {"id", "sem_seg", "sem_seg_classes"}  # SegIC makes no "instances"
    inst = out["id"]
    assert isinstance(inst, Instances) and inst.image_size == (h, w) and len(inst) == len(things)
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape[1:] == (h, w)
    assert inst.pred_ids.tolist() == list(range(len(things)))
    assert inst.pred_classes.tolist() == labels
    assert ((inst.scores >= 0.5) & (inst.scores <= 1)).all()
    assert out["sem_seg_classes"].tolist() == sorted(set(labels))
    assert out["sem_seg"].shape == (len(set(labels)), h, w)
    # The class map is the union (max probability) of its entities' masks.
    for c in set(labels):
        entities = [k for k, lab in enumerate(labels) if lab == c]
        union = inst.pred_masks[entities].any(0)
        row = out["sem_seg_classes"].tolist().index(c)
        assert torch.equal(out["sem_seg"][row] > 0.5, union)
    with pytest.raises(ValueError, match="instances"):
        predictor.predict(target, outputs={"instances"})


def test_predictor_equals_the_model_forward(predictor):
    """Cached reference tokens + segment give what the model's batched forward gives."""
    cats = [c["id"] for c in THING_CATEGORIES[2:4]]
    image, things = scene(2, cats)
    predictor.set_reference(image, [m for _, m in things])
    target, _ = scene(3, cats)
    out = predictor.predict(target)
    t_ref = _resize_image(image, predictor.image_size)
    inst = Instances(tuple(t_ref.shape[-2:]))
    inst.gt_masks = _resize_masks(np.stack([m for _, m in things]), tuple(t_ref.shape[-2:]))
    inst.gt_classes = torch.zeros(len(things), dtype=torch.long)
    inst.ins_ids = torch.arange(len(things))
    t = _resize_image(target, predictor.image_size)
    with torch.no_grad():
        forward = predictor.model([{"image": t, "height": target.shape[0],
                                    "width": target.shape[1],
                                    "references": [{"image": t_ref, "instances": inst}]}])[0]
    assert torch.equal(out["id"].pred_masks, forward["id"].pred_masks)
    torch.testing.assert_close(out["sem_seg"], forward["sem_seg"])


def test_video_predictor_tracks_objects_with_segic():
    torch.manual_seed(0)
    video = VideoPredictor(InContextPredictor(get_sine_cfg(BASE, TINY_SEGIC_OPTS)))
    frames, labels, objects = render_video(np.random.default_rng(0), 4, 96, 128, False)
    ids = sorted(int(i) for i in np.unique(labels[0]) if i)
    first = video.start(frames[0], labels[0])
    results = [first] + [video.step(f) for f in frames[1:]]
    for r in results:
        assert r.labels.shape == (96, 128)
        assert set(np.unique(r.labels)) <= {0, *ids}
        assert sorted(r.masks) == ids



def test_fss_suite_evaluates_segic(synthetic_root, tmp_path):  # noqa: F811
    import inference_fss.eval as fss_eval

    torch.manual_seed(0)
    summary = fss_eval.main([
        "--config-file", BASE, "--benchmark", "synthetic", "--shot", "2", "--num-episodes", "4",
        "--output", str(tmp_path / "out"), *TINY_SEGIC_OPTS, "TEST.FSS.IMAGE_SIZE", "56",
        "TEST.FSS.SAMPLER", "balanced",
        "DATALOADER.NUM_WORKERS", "0"])
    fold = summary["folds"]["0"]
    assert fold["episodes"] == 4 and 0 <= fold["mIoU"] <= 100
    assert summary["threshold"] == 0.5  # SegIC's masks: probability > 0.5 (logit > 0)
    with open(tmp_path / "out" / "fss_synthetic_2shot_text-none.json") as f:  # no text tower
        assert json.load(f)["config_file"] == BASE
