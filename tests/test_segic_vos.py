"""SegIC's VOS protocol as policies of the one video predictor (memory "first_latest", merge
"max_sigmoid"; configs/vos/segic_*.yaml): official output on the golden clip, the run_vos CLI."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("segment_anything", reason="SegIC needs the segic extra")

from inference_vos import run_vos  # noqa: E402
from sine.config import get_sine_cfg  # noqa: E402
from sine.engine.predictor import InContextPredictor  # noqa: E402
from sine.engine.video_predictor import VideoPredictor  # noqa: E402
from sine.engine.vos_policies import merge_highest_id, merge_max_sigmoid  # noqa: E402
from tests.test_segic_parity import golden, model, weights  # noqa: E402,F401  (fixtures)
from tests.test_vos import moving_squares, write_davis_tree  # noqa: E402
from tests.tiny_model import TINY_SEGIC_OPTS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAVIS = os.path.join(ROOT, "configs", "vos", "segic_davis17.yaml")


def segic_video_predictor(cfg, model=None):  # noqa: F811
    """A video predictor with the VOS settings of configs/vos/segic_davis17.yaml."""
    cfg = cfg.clone()
    cfg.MODEL.SINE.VOS = get_sine_cfg(DAVIS, TINY_SEGIC_OPTS).MODEL.SINE.VOS.clone()
    return VideoPredictor(InContextPredictor(cfg, model=model))


def test_video_predictor_reproduces_the_official_segic_vos(golden, model):  # noqa: F811
    """Frames and first-frame labels in, label maps out: the recorded official segmentation
    (first frame = its ground truth; memory = first + latest; cross-object negatives; merge)."""
    from tests.segic_golden import build_segic_cfg

    vp = segic_video_predictor(build_segic_cfg(golden), model)
    frames = golden["inputs"]["vos_frames_uint8_thwc"].numpy()
    first = golden["inputs"]["vos_first_mask_palette"].numpy()
    expected = golden["outputs_vos"]["vos.seg_result"].numpy()
    results = [vp.start(frames[0], first)] + [vp.step(f) for f in frames[1:]]
    assert len(results) == len(expected)
    for t, r in enumerate(results):
        differ = int((r.labels != expected[t]).sum())
        assert differ == 0, f"frame {t}: {differ} pixels differ"
        for obj_id, mask in r.masks.items():
            assert np.array_equal(mask, r.labels == obj_id)  # exclusive masks
    # The memory holds the ground-truth frame and the latest prediction only.
    for obj_id in vp.bank.object_ids:
        assert [e.frame_id for e in vp.bank.get_memory(obj_id)] == [len(frames) - 1, 0]


def test_merge_policies():
    ids = [1, 2]
    logits = torch.tensor([[[2.0, -1.0, 0.5]], [[1.0, -3.0, 3.0]]])
    masks = logits > 0
    merged = merge_max_sigmoid(ids, masks, logits)
    assert merged[1].tolist() == [[True, False, False]]
    assert merged[2].tolist() == [[False, False, True]]
    assert all(torch.equal(a, b) for a, b in zip(merge_highest_id(ids, masks, None).values(),
                                                  masks))
    with pytest.raises(ValueError, match="highest_id"):
        merge_max_sigmoid(ids, masks, None)


def test_unknown_policy_is_named():
    cfg = get_sine_cfg(DAVIS, [*TINY_SEGIC_OPTS, "MODEL.SINE.VOS.MEMORY_POLICY", "latest"])
    with pytest.raises(ValueError, match="MEMORY_POLICY 'latest'.*first_latest"):
        VideoPredictor(InContextPredictor(cfg))


def test_run_vos_evaluates_segic_from_its_config(tmp_path):
    torch.manual_seed(0)
    root, out = tmp_path / "davis", tmp_path / "out"
    frames, labels = moving_squares(4, 2, seed=3)
    write_davis_tree(str(root), {"clipA": (frames, labels)})
    summary = run_vos.main(["--config-file", DAVIS, "--dataset", "davis17", "--root", str(root),
                            "--output", str(out), *TINY_SEGIC_OPTS])
    assert summary["processed"] == ["clipA"]
    assert sorted(os.listdir(out / "clipA")) == [f"{t:05d}.png" for t in range(4)]
    with Image.open(out / "clipA" / "00000.png") as img:
        first = np.array(img)
    # The first frame is output as given (SegIC's protocol), up to the resize round trip.
    assert (first == labels[0]).mean() > 0.95
    with open(out / "jf_results.json") as f:
        assert 0 <= json.load(f)["global"]["J&F-Mean"] <= 100
