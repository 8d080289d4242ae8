"""The demos run a SegIC config unchanged (tiny random SegIC with a tiny CLIP text tower): the
image CLI with class names as SegIC's text prompt and captions, the video CLI, the app's Run."""
import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("segment_anything", reason="SegIC needs the segic extra")
pytest.importorskip("transformers", reason="SegIC's text tower needs the segic extra")

from demo.demo import main as demo_main  # noqa: E402
from sine.modeling.meta_arch.segic_model import SegIC  # noqa: E402
from tests.segic_text import text_opts, write_tiny_clip_text  # noqa: E402
from tests.test_demo_cli import TARGETS, scene  # noqa: E402,F401  (fixture)
from tests.test_segic_predictor import BASE  # noqa: E402
from tests.test_vos import moving_squares  # noqa: E402
from tests.tiny_model import TINY_SEGIC_OPTS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def segic_opts(tmp_path_factory):
    clip = write_tiny_clip_text(str(tmp_path_factory.mktemp("clip")))
    return [*TINY_SEGIC_OPTS, *text_opts(clip)]


@pytest.fixture
def prompts(monkeypatch):
    """Every text prompt SegIC encodes."""
    seen = []
    original = SegIC.encode_text
    monkeypatch.setattr(SegIC, "encode_text",
                        lambda self, texts: seen.extend(texts) or original(self, texts))
    return seen


def test_image_demo_runs_segic_with_class_names(scene, segic_opts, prompts, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    torch.manual_seed(0)
    summary = demo_main(["--config-file", BASE, "--ref-image", scene["ref"], "--ref-mask",
                         *scene["masks"], "--ref-class", "4", "9", "--ref-name", "red box", "cup",
                         "--input", str(scene["dir"] / "targets" / "*"), "--output", str(out),
                         "--device", "cpu", "--opts", *segic_opts])
    assert prompts == ["a photo of a red box", "a photo of a cup"]
    assert len(summary.written) == len(TARGETS)
    for name, (h, w, _) in TARGETS.items():
        arrays = np.load(out / f"{name}_masks.npz")
        assert arrays["id_masks"].shape == (2, h, w)
        assert arrays["semantic_classes"].tolist() == [4, 9]
        assert "instance_masks" not in arrays  # SegIC has no class-level instance output
        with Image.open(out / f"{name}_sine.png") as vis:  # reference + ID + semantic panels
            assert vis.size[0] > 2 * w
    with pytest.raises(ValueError, match="--ref-names gives 1 name"):
        demo_main(["--config-file", BASE, "--ref-image", scene["ref"], "--ref-mask",
                   *scene["masks"], "--ref-name", "cup", "--input", scene["ref"],
                   "--output", str(out), "--opts", *segic_opts])


def test_video_demo_runs_segic(segic_opts, tmp_path):
    frames, labels = moving_squares(4, 2, seed=6)
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for frame in frames:
        writer.write(frame[..., ::-1].copy())
    writer.release()
    mask = tmp_path / "mask.png"
    Image.fromarray((labels[0] == 1).astype(np.uint8) * 255).save(mask)
    spec = importlib.util.spec_from_file_location("demo_video",
                                                  os.path.join(ROOT, "demo/demo_video.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = tmp_path / "frames"
    torch.manual_seed(0)
    demo.main(["--config-file", BASE, "--input", video, "--mask", str(mask), "--output",
               str(out), "--device", "cpu", "--opts", *TINY_SEGIC_OPTS])
    assert len(os.listdir(out)) == len(frames)


def test_app_run_with_segic_uses_the_class_names(segic_opts, prompts):
    import gradio as gr

    from demo.app import segment
    from sine.config import get_sine_cfg
    from sine.engine.predictor import InContextPredictor

    torch.manual_seed(0)
    predictor = InContextPredictor(get_sine_cfg(BASE, segic_opts))
    image = np.full((60, 80, 4), 200, np.uint8)
    image[10:30, 10:30, :3], image[35:55, 40:70, :3] = (220, 40, 30), (30, 70, 220)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 10:30], mask[35:55, 40:70] = 1, 2
    editor = {"background": image, "layers": [], "composite": image}
    target = image[..., :3].copy()
    id_image, instances, semantic, status = segment(predictor, editor, mask, target, 0.5,
                                                    "red box, blue box")
    assert prompts == ["a photo of a red box", "a photo of a blue box"]
    assert predictor.references.names == ["red box", "blue box"]
    assert id_image.shape == semantic.shape == (60, 80, 3) and instances is None
    assert "2 reference object(s)" in status
    with pytest.raises(gr.Error, match="names 3 classes for 2 reference objects"):
        segment(predictor, editor, mask, target, 0.5, "a, b, c")
