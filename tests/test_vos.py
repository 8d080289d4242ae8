"""Video object segmentation: VideoPredictor, "vos" pooling, run_vos and demo_video (tiny model)."""
import copy
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from inference_vos import run_vos
from sine.config import get_sine_cfg
from sine.data.synthetic.videos import davis_palette
from sine.engine.predictor import SinePredictor
from sine.engine.video_predictor import (
    VideoPredictor,
    long_side_size,
    open_video,
    short_side_size,
)
from sine.modeling.transformer_decoder.in_context_fusion import MaskPooling
from sine.modeling.transformer_decoder.reference_pooling import REFERENCE_POOLING
from tests.tiny_model import TINY_MODEL_OPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    *TINY_MODEL_OPTS,
    # 48 x 64 frames -> masks predicted at 40 x 53, model input 84 x 112 padded to 112.
    "MODEL.SINE.VOS.SHORT_SIDE", "40",
]


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return SinePredictor(get_sine_cfg(opts=TINY))


def video_predictor(predictor, **vos):
    """A VideoPredictor sharing the module's model, with MODEL.SINE.VOS overrides."""
    p = copy.copy(predictor)
    p.cfg = predictor.cfg.clone()
    for key, value in vos.items():
        setattr(p.cfg.MODEL.SINE.VOS, key, value)
    return VideoPredictor(p)


def moving_squares(num_frames, num_objects=3, h=48, w=64, seed=0):
    """Frames (H, W, 3) uint8 and label maps of coloured squares drifting over noise."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    colours = rng.integers(0, 255, (num_objects, 3), dtype=np.uint8)
    starts = rng.integers(0, [h - 16, w - 16], (num_objects, 2))
    frames, labels = [], []
    for t in range(num_frames):
        frame, label = background.copy(), np.zeros((h, w), np.uint8)
        for k in range(num_objects):
            y, x = (starts[k] + t) % [h - 16, w - 16]
            frame[y:y + 14, x:x + 14] = colours[k]
            label[y:y + 14, x:x + 14] = k + 1
        frames.append(frame)
        labels.append(label)
    return frames, labels


def count_vit_images(model, calls):
    return model.image_encoder.encoder.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].shape[0]))


def track(vp, frames, first_labels):
    return [vp.start(frames[0], first_labels)] + [vp.step(f) for f in frames[1:]]


def test_official_frame_sizes():
    """Sizes derived by hand from spec §7.3, on frames where the formulas differ."""
    # Shorter side -> 518: the image (torchvision Resize) and the GT mask (resize_mask) formulas.
    assert short_side_size(480, 854, 518) == short_side_size(480, 854, 518, mask=True) \
        == (518, 921)  # DAVIS 480p: they agree
    assert short_side_size(720, 1280, 518) == short_side_size(720, 1280, 518, mask=True) \
        == (518, 920)  # YouTube-VOS 720p
    assert short_side_size(1280, 720, 518) == short_side_size(1280, 720, 518, mask=True) \
        == (920, 518)  # portrait
    assert short_side_size(518, 633, 518) == (518, 633)  # already 518: kept
    assert short_side_size(518, 633, 518, mask=True) == (518, 632)  # 633 / 518 * 518 < 633
    assert short_side_size(259, 446, 518) == (518, 892)
    assert short_side_size(259, 446, 518, mask=True) == (518, 891)
    assert short_side_size(480, 854, 0) == short_side_size(480, 854, 0, mask=True) == (480, 854)
    # Longer side -> 1036 through the aspect ratio, each from its own shape.
    assert long_side_size(518, 921, 1036) == (582, 1036)
    assert long_side_size(518, 633, 1036) == (847, 1036)  # the image of a 518 x 633 frame
    assert long_side_size(518, 632, 1036) == (849, 1036)  # ... and its GT mask
    assert long_side_size(600, 672, 1036) == (924, 1036)  # int(1036 * 600 / 672) would be 925
    assert long_side_size(259, 223, 1036) == (1036, 891)  # portrait: int(1036 * a), not 892
    assert long_side_size(100, 112, 1036) == (924, 1036)
    assert long_side_size(50, 50, 1036) == (1036, 1036)


@pytest.mark.parametrize("antialias", [False, True])
def test_frames_shrink_like_torchvision_tensor_resize(predictor, antialias):
    """Default: no antialiasing, as the official pinned torchvision 0.15 (option: antialias)."""
    from torchvision.transforms import functional as TF

    frame = np.random.default_rng(0).integers(0, 255, (72, 128, 3), dtype=np.uint8)
    opts = {} if not antialias else {"ANTIALIAS": True}
    vp = video_predictor(predictor, **opts)
    prepared = vp._prepare(frame)
    # Official: ToTensor, then transforms.Resize(SHORT_SIDE) on the tensor.
    work = TF.resize(torch.from_numpy(frame).permute(2, 0, 1).float() / 255, [40],
                     antialias=antialias)
    assert prepared.work_size == tuple(work.shape[-2:]) == (40, 71)
    expected = torch.nn.functional.interpolate(work[None] * 255, size=(63, 112),
                                               mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(prepared.image, expected, rtol=0, atol=1e-3)
    if antialias:
        assert not torch.allclose(prepared.image, video_predictor(predictor)._prepare(frame).image)


def test_ground_truth_masks_follow_the_official_mask_sizes(predictor):
    # 25 x 29 frames at SHORT_SIDE 50: image 50 x 58 -> 96 x 112, GT mask 50 x 57 -> 98 x 112.
    frames, labels = moving_squares(4, num_objects=2, h=25, w=29, seed=4)
    vp = video_predictor(predictor, SHORT_SIDE=50)
    prepared = vp._prepare(frames[0])
    assert prepared.work_size == (50, 58) and prepared.content_size == (96, 112)
    assert tuple(vp._model_mask(labels[0] == 1, prepared).shape) == (98, 112)
    results = track(vp, frames, labels[0])  # GT and predicted masks of a frame pool together
    assert all(r.labels.shape == (25, 29) for r in results)
    assert sorted(results[-1].masks) == [1, 2]


def test_vit_runs_once_per_frame(predictor):
    frames, labels = moving_squares(9)
    vp = video_predictor(predictor, MEMORY_LEN=6)
    calls = []
    hook = count_vit_images(predictor.model, calls)
    try:
        results = track(vp, frames, labels[0])
    finally:
        hook.remove()
    assert calls == [1] * len(frames)  # one image per frame, memory frames never re-encoded
    assert vp.num_memory_frames >= 6  # ... although the memory holds many frames
    assert sorted(results[-1].masks) == [1, 2, 3]
    assert results[-1].labels.shape == (48, 64) and results[-1].masks[1].dtype == bool


def test_frames_are_segmented_through_the_model_surface(predictor, monkeypatch):
    """Every frame: "vos" tokens of the memory, then segment(outputs={"id"}), whose ID
    results (one per object id) are the frame's masks."""
    frames, labels = moving_squares(4, seed=2)
    model = predictor.model
    calls = []
    tokens_of, segment = model.reference_tokens, model.segment

    def spy_tokens(*args, pooling=None, **kwargs):
        calls.append(("tokens", pooling))
        return tokens_of(*args, pooling=pooling, **kwargs)

    def spy_segment(features, tokens, geometry, outputs):
        result = segment(features, tokens, geometry, outputs)
        calls.append(("segment", frozenset(outputs), tuple(geometry.output_size)))
        results.append(result["id"])
        return result

    results = []
    monkeypatch.setattr(model, "reference_tokens", spy_tokens)
    monkeypatch.setattr(model, "segment", spy_segment)
    tracked = track(video_predictor(predictor), frames, labels[0])
    assert calls == [("tokens", "vos"), ("segment", frozenset({"id"}), (40, 53))] * 4
    for frame, ids in zip(tracked, results):
        assert sorted(ids.pred_ids.tolist()) == [1, 2, 3]  # one result per object
        for obj_id, mask in zip(ids.pred_ids.tolist(), ids.pred_masks):
            at_frame_size = torch.nn.functional.interpolate(
                mask[None, None].float(), size=(48, 64), mode="nearest")[0, 0] > 0.5
            np.testing.assert_array_equal(frame.masks[obj_id], at_frame_size.numpy())


def test_cached_features_match_reencoding(predictor):
    frames, labels = moving_squares(8, seed=1)
    cached = track(video_predictor(predictor, CACHE_FEATURES=True), frames, labels[0])
    calls = []
    hook = count_vit_images(predictor.model, calls)
    try:
        reference = track(video_predictor(predictor, CACHE_FEATURES=False), frames, labels[0])
    finally:
        hook.remove()
    assert sum(calls) > 2 * len(frames)  # the reference path really re-encodes memory frames
    for a, b in zip(cached, reference):
        np.testing.assert_array_equal(a.labels, b.labels)
        for obj_id in (1, 2, 3):
            np.testing.assert_array_equal(a.masks[obj_id], b.masks[obj_id])


def test_memory_bounded_and_objects_added_later(predictor):
    frames, labels = moving_squares(30, seed=2)
    vp = video_predictor(predictor, MEMORY_LEN=3)
    vp.start(frames[0], {1: labels[0] == 1, 2: labels[0] == 2})
    for t, frame in enumerate(frames[1:], start=1):
        if t == 4:
            result = vp.add_objects(frame, {3: labels[t] == 3})
            assert sorted(result.masks) == [1, 2, 3]
        else:
            vp.step(frame)
        assert all(len(vp.bank.get_memory(i)) <= 3 for i in vp.bank.object_ids)
        assert vp.num_memory_frames <= 3 * len(vp.bank)
    first = vp.bank.get_memory(3)[-1]
    assert first.frame_id == 4 and first.score == 1.0  # the pinned ground-truth frame
    with pytest.raises(ValueError, match="already tracked"):
        vp.step(frames[0], {2: labels[0] == 2})
    with pytest.raises(ValueError, match="must increase"):
        vp.step(frames[0], frame_id=3)
    with pytest.raises(ValueError, match="same height and width"):
        vp.step(frames[0], {4: labels[0][:20] == 1})
    with pytest.raises(ValueError, match="no object to track"):
        vp.start(frames[0], np.zeros((48, 64), np.uint8))


def test_flip_tta_keeps_the_better_of_the_frame_and_its_mirror(predictor):
    frames, labels = moving_squares(4, seed=9)
    calls = []
    hook = predictor.model.image_encoder.encoder.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].detach().clone()))
    tta_vp, plain_vp = video_predictor(predictor, FLIP_TTA=True), video_predictor(predictor)
    try:
        tta = tta_vp.start(frames[0], labels[0])
        tta_scores = dict(tta_vp.last_scores)
        plain = plain_vp.start(frames[0], labels[0])
    finally:
        hook.remove()
    assert [c.shape[0] for c in calls] == [2, 1]  # the frame and its mirror in one batch
    content = calls[0][:, :, :84, :112]  # 48 x 64 -> 40 x 53 -> 84 x 112, padded to 112
    torch.testing.assert_close(content[1], content[0].flip(-1))
    for obj_id in (1, 2, 3):
        assert tta_scores[obj_id] >= plain_vp.last_scores[obj_id]
        if not np.array_equal(tta.masks[obj_id], plain.masks[obj_id]):
            assert tta_scores[obj_id] > plain_vp.last_scores[obj_id]
    results = track(video_predictor(predictor, FLIP_TTA=True), frames, labels[0])
    assert all(r.labels.shape == (48, 64) for r in results)


def test_flip_tta_merge_flips_the_mirrored_mask_back():
    frame_mask = torch.zeros(2, 4, dtype=torch.bool)
    mirrored = torch.zeros(2, 4, dtype=torch.bool)
    mirrored[:, 0] = True  # on the mirrored frame: the left column
    masks, scores = {1: frame_mask.clone(), 2: frame_mask.clone()}, {1: 0.2, 2: 0.9}
    VideoPredictor._merge_mirrored(masks, scores, {1: mirrored, 2: mirrored}, {1: 0.5, 2: 0.5})
    assert scores == {1: 0.5, 2: 0.9}
    assert masks[1][:, 3].all() and masks[1].sum() == 2  # the right column of the frame
    assert not masks[2].any()


def test_empty_video_errors_clearly(tmp_path):
    (tmp_path / "frames").mkdir()
    with pytest.raises(ValueError, match="no frames"):
        open_video(str(tmp_path / "frames"))
    empty_mp4 = str(tmp_path / "empty.mp4")
    cv2.VideoWriter(empty_mp4, cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48)).release()
    with pytest.raises(ValueError, match="no frames|cannot open"):
        open_video(empty_mp4)
    with pytest.raises(ValueError, match="neither a folder nor a video"):
        open_video(str(tmp_path / "missing.mp4"))


def test_vos_pooling_equals_instance_pooling_for_one_frame():
    torch.manual_seed(0)
    feats = torch.randn(1, 8, 4, 4)
    masks = torch.zeros(3, 56, 56, dtype=torch.bool)
    masks[0, :20, :20] = masks[1, 30:, 10:40] = masks[2, 5:50, 45:] = True
    ids = torch.tensor([2, 5, 7])
    pool = MaskPooling()
    inst = REFERENCE_POOLING["instance"](feats, [masks], [ids], (16, 16), pool)
    vos = REFERENCE_POOLING["vos"](feats, [masks], [ids], (16, 16), pool)
    torch.testing.assert_close(vos[0], inst[0])  # one ID token per object
    torch.testing.assert_close(vos[1], vos[0])  # prototypes are the same tensors
    assert vos[2].tolist() == vos[3].tolist() == [2, 5, 7]
    # Two frames of one object: the pixel-weighted mean over both frames together.
    feats2 = torch.randn(2, 8, 4, 4)
    two = REFERENCE_POOLING["vos"](feats2, [masks[:1], masks[1:2]], [ids[:1], ids[:1]],
                                   (16, 16), pool)
    up = torch.nn.functional.interpolate(feats2, size=(16, 16), mode="bilinear")
    small = torch.nn.functional.interpolate(masks[:2, None].float(), size=(16, 16),
                                            mode="bilinear")[:, 0] > 0
    expected = torch.einsum("kchw,khw->c", up, small.float()) / small.sum()
    torch.testing.assert_close(two[0][0, 0], expected)


def write_davis_tree(root, videos):
    palette = davis_palette()
    for name, (frames, labels) in videos.items():
        for sub, items, ext in (("JPEGImages", frames, "jpg"), ("Annotations", labels, "png")):
            folder = os.path.join(root, sub, "480p", name)
            os.makedirs(folder)
            for t, item in enumerate(items):
                img = Image.fromarray(item)
                if ext == "png":
                    img.putpalette(palette)
                img.save(os.path.join(folder, f"{t:05d}.{ext}"), quality=95)
    for year in ("2016", "2017"):
        os.makedirs(os.path.join(root, "ImageSets", year))
        with open(os.path.join(root, "ImageSets", year, "val.txt"), "w") as f:
            f.write("".join(f"{n}\n" for n in videos))


def run_vos_args(dataset, root, output, *extra):
    return ["--config-file", os.path.join(ROOT, "configs/vos/davis17.yaml"), "--dataset",
            dataset, "--root", str(root), "--output", str(output), *extra, *TINY]


def test_run_vos_davis_writes_results_evaluates_and_resumes(tmp_path, capsys):
    root, out = tmp_path / "davis", tmp_path / "out"
    write_davis_tree(str(root), {"clipA": moving_squares(5, 2, seed=3),
                                 "clipB": moving_squares(5, 3, seed=4)})
    summary = run_vos.main(run_vos_args("davis17", root, out))
    assert "frames/s (10 frames in" in capsys.readouterr().out
    assert summary["processed"] == ["clipA", "clipB"] and summary["skipped"] == []
    for video in ("clipA", "clipB"):
        pngs = sorted(os.listdir(out / video))
        assert pngs == [f"{t:05d}.png" for t in range(5)]
        with Image.open(out / video / pngs[2]) as img:
            assert img.mode == "P" and img.size == (64, 48)
    with open(out / "jf_results.json") as f:
        scores = json.load(f)
    assert 0 <= scores["global"]["J&F-Mean"] <= 100
    assert len(scores["per_object"]) == 5  # 2 + 3 objects

    stamps = {p: os.path.getmtime(out / "clipA" / p) for p in os.listdir(out / "clipA")}
    os.remove(out / ".done" / "clipB.json")  # as if the run had stopped during clipB
    again = run_vos.main(run_vos_args("davis17", root, out))
    assert again["skipped"] == ["clipA"] and again["processed"] == ["clipB"]
    assert stamps == {p: os.path.getmtime(out / "clipA" / p) for p in stamps}
    # Results of other settings are never taken for finished videos of this run.
    with pytest.raises(ValueError, match="other settings.*model_config_sha1"):
        run_vos.main(run_vos_args("davis17", root, out, "MODEL.SINE.VOS.MEMORY_LEN", "3"))


def test_run_vos_two_processes_match_one_and_resume_per_video(tmp_path):
    root = tmp_path / "davis"
    write_davis_tree(str(root), {"clipA": moving_squares(4, 2, seed=3),
                                 "clipB": moving_squares(4, 1, seed=4),
                                 "clipC": moving_squares(4, 2, seed=5)})
    torch.manual_seed(0)
    weights = str(tmp_path / "tiny.pth")  # spawned processes must build the same model
    torch.save({"model": SinePredictor(get_sine_cfg(opts=TINY)).model.state_dict()}, weights)
    one = run_vos.main(run_vos_args("davis17", root, tmp_path / "one", "MODEL.WEIGHTS",
                                    weights))
    two = run_vos.main(run_vos_args("davis17", root, tmp_path / "two", "--num-gpus", "2",
                                    "MODEL.WEIGHTS", weights))  # gloo on CPU
    assert two["processed"] == one["processed"] == ["clipA", "clipB", "clipC"]
    assert two["global"] == one["global"] and two["per_object"] == one["per_object"]
    for video in ("clipA", "clipB", "clipC"):
        for png in sorted(os.listdir(tmp_path / "one" / video)):
            a = np.array(Image.open(tmp_path / "one" / video / png))
            np.testing.assert_array_equal(a, np.array(Image.open(tmp_path / "two" / video / png)))
    os.remove(tmp_path / "two" / ".done" / "clipB.json")  # as if its process had been killed
    again = run_vos.main(run_vos_args("davis17", root, tmp_path / "two", "--num-gpus", "2",
                                      "MODEL.WEIGHTS", weights))
    assert again["processed"] == ["clipB"] and again["skipped"] == ["clipA", "clipC"]
    assert again["global"] == one["global"]


def test_run_vos_youtube_objects_appear_later(tmp_path):
    root, out = tmp_path / "YouTube", tmp_path / "out"
    frames, labels = moving_squares(3, 2, seed=5)
    names = ["00000", "00005", "00010"]
    firsts = [np.where(labels[0] == 1, 1, 0).astype(np.uint8),
              np.where(labels[1] == 2, 2, 0).astype(np.uint8)]  # object 2 appears at 00005
    for sub, items, ext in (("JPEGImages", frames, "jpg"), ("Annotations", firsts, "png")):
        folder = root / "valid" / sub / "vid1"
        folder.mkdir(parents=True)
        for name, item in zip(names, items):
            img = Image.fromarray(item)
            if ext == "png":
                img.putpalette(davis_palette())
            img.save(folder / f"{name}.{ext}")
    summary = run_vos.main(run_vos_args("ytvos18", root, out))
    result_dir = out / "Annotations" / "vid1"
    assert sorted(os.listdir(result_dir)) == [f"{n}.png" for n in names]
    with Image.open(result_dir / "00000.png") as img:
        assert set(np.unique(np.array(img))) <= {0, 1}  # object 2 not given yet
    import zipfile

    with zipfile.ZipFile(summary["submission"]) as z:
        assert sorted(z.namelist()) == [f"Annotations/vid1/{n}.png" for n in names]


@pytest.mark.parametrize("all_frames", ["config", "flag", None])
def test_run_vos_youtube_all_frames_mode(tmp_path, all_frames):
    root, out = tmp_path / "YouTube", tmp_path / "out"
    frames, labels = moving_squares(11, 1, seed=8)
    annotated = ["00000", "00005", "00010"]
    for sub, folder in (("JPEGImages", root / "valid" / "JPEGImages" / "vid1"),
                        ("all", root / "all_frames" / "valid_all_frames" / "JPEGImages" / "vid1")):
        folder.mkdir(parents=True)
        for t, frame in enumerate(frames):
            if sub == "all" or f"{t:05d}" in annotated:
                Image.fromarray(frame).save(folder / f"{t:05d}.jpg")
    (root / "valid" / "Annotations" / "vid1").mkdir(parents=True)
    first = Image.fromarray(labels[0])
    first.putpalette(davis_palette())
    first.save(root / "valid" / "Annotations" / "vid1" / "00000.png")
    extra = {"config": ["TEST.VOS.ALL_FRAMES", "True"], "flag": ["--all-frames"], None: []}
    argv = run_vos_args("ytvos18", root, out)
    argv = argv[:-len(TINY)] + (extra[all_frames] if all_frames == "flag" else []) + TINY + \
        (extra[all_frames] if all_frames == "config" else [])
    run_vos.main(argv)
    with open(out / ".done" / "vid1.json") as f:
        processed = json.load(f)["frames"]
    assert processed == (3 if all_frames is None else 11)
    results = sorted(os.listdir(out / "Annotations" / "vid1"))
    assert results == [f"{n}.png" for n in annotated]  # results for the annotated frames only


def test_demo_video_writes_an_overlay_mp4(tmp_path):
    frames, labels = moving_squares(5, 2, seed=6)
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for frame in frames:
        writer.write(frame[..., ::-1].copy())
    writer.release()
    mask = tmp_path / "mask.png"
    Image.fromarray((labels[0] == 1).astype(np.uint8) * 255).save(mask)  # a binary mask
    spec = importlib.util.spec_from_file_location("demo_video",
                                                  os.path.join(ROOT, "demo/demo_video.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    output = str(tmp_path / "tracked.mp4")
    demo.main(["--config-file", os.path.join(ROOT, "configs/vos/davis17.yaml"), "--input", video,
               "--mask", str(mask), "--output", output, "--device", "cpu", "--opts", *TINY])
    capture = cv2.VideoCapture(output)
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == len(frames)


@pytest.mark.parametrize("image_size, pad_size", [(84, 112), (112, 140), (0, 0)])
def test_frames_resized_to_image_size_and_padded_to_pad_size(predictor, image_size, pad_size):
    """MODEL.SINE.VOS.IMAGE_SIZE / PAD_SIZE (official --img-size / --pad-size) may differ."""
    frames, labels = moving_squares(3, seed=2)  # 48 x 64 -> 40 x 53 (SHORT_SIDE 40)
    vp = video_predictor(predictor, IMAGE_SIZE=image_size, PAD_SIZE=pad_size)
    pad = pad_size or predictor.cfg.MODEL.SINE.PAD_SIZE  # 0: the model's PAD_SIZE (112)
    h, w = long_side_size(40, 53, image_size or pad)
    inputs = []
    hook = predictor.model.image_encoder.encoder.register_forward_hook(
        lambda module, args, output: inputs.append(args[0].clone()))
    try:
        results = track(vp, frames, labels[0])
    finally:
        hook.remove()
    assert [tuple(x.shape) for x in inputs] == [(1, 3, pad, pad)] * len(frames)
    for x in inputs:  # the frame fills (h, w), zeros (the normalised mean) elsewhere
        assert x[..., h:, :].abs().sum() == 0 and x[..., :, w:].abs().sum() == 0
        assert x[..., h - 1, :w].abs().sum() > 0 and x[..., :h, w - 1].abs().sum() > 0
    assert sorted(results[-1].masks) == [1, 2, 3]
    assert results[-1].masks[1].shape == (48, 64)


@pytest.mark.parametrize("vos, message", [({"PAD_SIZE": 100}, "multiple of the patch size"),
                                          ({"IMAGE_SIZE": 126}, "within")])
def test_bad_vos_sizes_are_refused(predictor, vos, message):
    with pytest.raises(ValueError, match=message):
        video_predictor(predictor, **vos)
