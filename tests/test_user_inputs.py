"""Bad and unusual inputs through every entry point: the API (SinePredictor, VideoPredictor),
the CLIs (demo/demo.py, demo/demo_video.py, in-process) and the web app's Run function.

Each case yields the correct result (equal to the result of the equivalent plain uint8 input)
or a clear error naming the problem; a CLI never shows a traceback and never leaves output
behind after an error.
"""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sine.config import get_sine_cfg
from sine.data import user_inputs as ui
from sine.data.user_inputs import UserInputError
from sine.engine.predictor import SinePredictor
from sine.utils.cli import CONFIG_ROOTS, run_cli, split_config_overrides
from tests.tiny_model import TINY_MODEL_OPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [*TINY_MODEL_OPTS, "MODEL.SINE.TEST.INSTANCE_SCORE_THRESH", "-1.0"]
H, W = 48, 64  # reference
TH, TW = 40, 56  # target


def _rgb(h, w, seed):
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 180, np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        image[y:y + 12, x:x + 16] = rng.integers(0, 255, 3)
    return image


REF, TARGET = _rgb(H, W, 0), _rgb(TH, TW, 1)
LABELS = np.zeros((H, W), np.uint8)
LABELS[5:20, 5:30], LABELS[25:45, 30:60] = 1, 2
MASKS = np.stack([LABELS == 1, LABELS == 2])  # the canonical two objects
ONE = MASKS[:1]


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return SinePredictor(get_sine_cfg(opts=TINY))


def _result(predictor, ref, masks, target, labels=None, **kw):
    predictor.set_reference(ref, masks, labels, **kw)
    out = predictor.predict(target)
    order = torch.argsort(out["id"].pred_ids, stable=True)  # row k = reference object k
    return out["sem_seg"].numpy(), out["id"].pred_masks[order].numpy()


def _same(a, b):
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    assert np.array_equal(a[1], b[1])


# ------------------------------------------------------------------------- image cases
def _png(tmp, name, array_or_image, **save):
    img = array_or_image if isinstance(array_or_image, Image.Image) else \
        Image.fromarray(array_or_image)
    path = str(tmp / name)
    img.save(path, **save)
    return path


def _rgba(a, alpha):
    return np.dstack([a, alpha]).astype(np.uint8)


def _transparent_corner(a):
    alpha = np.full(a.shape[:2], 255, np.uint8)
    alpha[:10, :10] = 0
    return alpha


def _white_corner(a):
    out = a.copy()
    out[:10, :10] = 255
    return out


def _exif_rotated(tmp, a):
    """A PNG stored sideways with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    img = Image.fromarray(np.ascontiguousarray(np.rot90(a, 1)))  # stored counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    return _png(tmp, "exif.png", img, exif=exif.tobytes())


def _truncated(tmp, a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    path = tmp / "truncated.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return str(path)


def _cmyk_jpeg(tmp, a):
    path = _png(tmp, "cmyk.jpg", Image.fromarray(a).convert("CMYK"), quality=95)
    return path, np.asarray(Image.open(path).convert("RGB"))


def _palette(tmp, a):
    img = Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _png(tmp, "palette.png", img), np.asarray(img.convert("RGB"))


# name -> builder(tmp, a) returning (input, expected (H, W, 3) uint8) or (input, error regex).
# ``a`` is the plain uint8 RGB image the input stands for.
IMAGE_CASES = {
    "uint8_rgb_path": lambda t, a: (_png(t, "plain.png", a), a),
    "16bit_gray_png": lambda t, a: (_png(t, "g16.png", a[..., 0].astype(np.uint16) * 257),
                                    np.repeat(a[..., :1], 3, axis=2)),
    "16bit_rgb_array": lambda t, a: (a.astype(np.uint16) * 257, a),
    "32bit_int_in_16bit_range": lambda t, a: (a.astype(np.int32) * 257, a),
    "32bit_int_beyond_16bit": lambda t, a: (a.astype(np.int32) * 70000, r"beyond 16 bits"),
    "float01": lambda t, a: (a.astype(np.float32) / 255, a),
    "float_0_255": lambda t, a: (a.astype(np.float32), r"float images must be in \[0, 1\]"),
    "float_nan": lambda t, a: (np.where(a > 200, np.nan, a / 255.0), r"NaN"),
    "float_tiff_path": lambda t, a: (_png(t, "f.tiff", a[..., 0].astype(np.float32) / 255),
                                     np.repeat(a[..., :1], 3, axis=2)),
    "palette_png": lambda t, a: _palette(t, a),
    "cmyk_jpeg": lambda t, a: _cmyk_jpeg(t, a),
    "rgba_opaque": lambda t, a: (_rgba(a, np.full(a.shape[:2], 255)), a),
    "rgba_transparent_corner_png": lambda t, a: (
        _png(t, "rgba.png", _rgba(a, _transparent_corner(a))), _white_corner(a)),
    "la_png": lambda t, a: (_png(t, "la.png", Image.fromarray(
        _rgba(a, _transparent_corner(a))).convert("LA")), _white_corner(
        np.repeat(np.asarray(Image.fromarray(a).convert("L"))[..., None], 3, axis=2))),
    "grayscale_2d": lambda t, a: (a[..., 0], np.repeat(a[..., :1], 3, axis=2)),
    "grayscale_hw1": lambda t, a: (a[..., :1], np.repeat(a[..., :1], 3, axis=2)),
    "bool_array": lambda t, a: (a[..., 0] > 100, r"mask, not an image"),
    "channels_first_numpy": lambda t, a: (a.transpose(2, 0, 1), r"channels first"),
    "five_channels": lambda t, a: (np.zeros((*a.shape[:2], 5), np.uint8), r"\(H, W, 3\) RGB"),
    "torch_chw_uint8": lambda t, a: (torch.from_numpy(a).permute(2, 0, 1), a),
    "torch_chw_float": lambda t, a: (torch.from_numpy(a).permute(2, 0, 1).float() / 255, a),
    "pil_image": lambda t, a: (Image.fromarray(a), a),
    "pil_path_object": lambda t, a: (t.joinpath(os.path.basename(_png(t, "p.png", a))), a),
    "negative_ints": lambda t, a: (a.astype(np.int16) - 10, r"negative values"),
    "empty_array": lambda t, a: (np.zeros((0, 0, 3), np.uint8), r"empty"),
    "not_an_image": lambda t, a: ({"image": a}, r"is a dict: give a file path"),
    "corrupt_file": lambda t, a: (_write(t, "broken.jpg", b"\xff\xd8 not a jpeg"),
                                  r"cannot read image file .*broken.jpg"),
    "truncated_png": lambda t, a: (_truncated(t, a), r"(cannot decode|truncated).*truncated.png"),
    "missing_file": lambda t, a: (str(t / "nope.png"), r"nope.png' does not exist"),
    "folder": lambda t, a: (str(t), r"is a folder, not a image file"),
    "text_file": lambda t, a: (_write(t, "notes.png", b"hello"), r"cannot read image file"),
}
EXIF_CASE = "exif_rotated"  # target only: it changes the image's shape


def _write(tmp, name, data):
    path = tmp / name
    path.write_bytes(data)
    return str(path)


def _build_image(name, tmp, a):
    return IMAGE_CASES[name](tmp, a)


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_read_image(name, tmp_path):
    value, expected = _build_image(name, tmp_path, REF)
    if isinstance(expected, str):
        with pytest.raises(UserInputError, match=expected):
            ui.read_image(value)
    else:
        out = ui.read_image(value)
        assert out.dtype == np.uint8 and out.shape == expected.shape
        assert np.abs(out.astype(int) - expected).max() <= 1  # 16-bit / float rounding


def test_exif_orientation_is_applied(tmp_path):
    out = ui.read_image(_exif_rotated(tmp_path, REF))
    expected = np.asarray(Image.fromarray(np.ascontiguousarray(np.rot90(REF, 1))).transpose(
        Image.Transpose.ROTATE_270))
    assert out.shape == REF.shape and np.array_equal(out, expected)


def test_images_beyond_the_maximum_size_are_refused_before_decoding(tmp_path, monkeypatch):
    path = _png(tmp_path, "big.png", REF)
    monkeypatch.setattr(ui, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(UserInputError, match=r"more than the maximum.*resize it first"):
        ui.read_image(path)


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_predictor_targets(predictor, name, tmp_path):
    """Through the API as a target: same result as the plain image, or the clear error."""
    value, expected = _build_image(name, tmp_path, TARGET)
    predictor.set_reference(REF, MASKS)
    if isinstance(expected, str):
        with pytest.raises(UserInputError, match=expected):
            predictor.predict(value)
        return
    out = predictor.predict(value)
    plain = predictor.predict(np.asarray(ui.read_image(expected)))
    torch.testing.assert_close(out["sem_seg"], plain["sem_seg"])


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_predictor_references(predictor, name, tmp_path):
    value, expected = _build_image(name, tmp_path, REF)
    if isinstance(expected, str):
        with pytest.raises(UserInputError, match=expected):
            predictor.set_reference(value, MASKS)
        return
    _same(_result(predictor, value, MASKS, TARGET), _result(predictor, expected, MASKS, TARGET))


# -------------------------------------------------------------------------- mask cases
def _jpeg_mask(tmp):
    """A lossy JPEG of the first object: grey values at its edges and in its blocks."""
    img = Image.fromarray(ONE[0].astype(np.uint8) * 255)
    path = str(tmp / "mask.jpg")
    img.save(path, quality=30)
    return path


def _soft(mask):
    return np.where(mask, 0.9, 0.1).astype(np.float32) + np.linspace(0, 0.05, mask.shape[1])


def _palette_mask(tmp):
    img = Image.fromarray(LABELS, mode="L").convert("P")
    img.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * 759)
    return _png(tmp, "palette_mask.png", img)


def _colour_mask():
    out = np.zeros((H, W, 3), np.uint8)
    out[LABELS == 1], out[LABELS == 2] = (255, 0, 0), (0, 0, 255)
    return out


# name -> builder(tmp) returning (mask input, expected (N, H, W) bool or error regex, kwargs)
MASK_CASES = {
    "bool_single": lambda t: (ONE[0], ONE, {}),
    "zero_one_uint8": lambda t: (ONE[0].astype(np.uint8), ONE, {}),
    "zero_255_uint8": lambda t: (ONE[0].astype(np.uint8) * 255, ONE, {}),
    "label_map_array": lambda t: (LABELS, MASKS, {}),
    "label_map_grey_png": lambda t: (_png(t, "labels.png", LABELS * 100), MASKS, {}),
    "label_map_palette_png": lambda t: (_palette_mask(t), MASKS, {}),
    "binary_png_path": lambda t: (_png(t, "m.png", ONE[0].astype(np.uint8) * 255), ONE, {}),
    "mode_1_png": lambda t: (_png(t, "m1.png", Image.fromarray(ONE[0])), ONE, {}),
    "16bit_png": lambda t: (_png(t, "m16.png", ONE[0].astype(np.uint16) * 65535), ONE, {}),
    "list_of_png_files": lambda t: ([_png(t, "a.png", MASKS[0].astype(np.uint8) * 255),
                                     _png(t, "b.png", MASKS[1].astype(np.uint8) * 255)],
                                    MASKS, {}),
    "stack_nhw": lambda t: (MASKS, MASKS, {}),
    "torch_bool": lambda t: (torch.from_numpy(ONE[0]), ONE, {}),
    "torch_stack": lambda t: (torch.from_numpy(MASKS).float(), MASKS, {}),
    "pil_L": lambda t: (Image.fromarray(ONE[0].astype(np.uint8) * 255), ONE, {}),
    "colour_mask_hw3": lambda t: (_colour_mask(), MASKS, {}),
    "grey_hw3": lambda t: (np.repeat(ONE[0, ..., None], 3, 2).astype(np.uint8) * 255, ONE, {}),
    "hw1": lambda t: (ONE[0, ..., None].astype(np.uint8), ONE, {}),
    "float_binary": lambda t: (ONE[0].astype(np.float32), ONE, {}),
    "soft_float_refused": lambda t: (_soft(ONE[0]), r"soft float mask.*mask_threshold", {}),
    "soft_float_thresholded": lambda t: (_soft(ONE[0]), ONE, {"mask_threshold": 0.5}),
    "jpeg_refused": lambda t: (_jpeg_mask(t), r"JPEG is lossy.*mask_threshold", {}),
    "float_above_one": lambda t: (ONE[0] * 3.0, r"float masks must be in \[0, 1\]", {}),
    "float_nan": lambda t: (np.where(ONE[0], np.nan, 0.0), r"NaN", {}),
    "wrong_size": lambda t: (ONE[0][:30], r"same height and width", {}),
    "transposed": lambda t: (ONE[0].T, r"same height and width", {}),
    "empty": lambda t: (np.zeros((H, W), bool), r"is empty", {}),
    "one_of_two_empty": lambda t: ([ONE[0], np.zeros((H, W), bool)], r"mask 1 .* is empty", {}),
    "negative_values": lambda t: (ONE[0].astype(np.int8) * -1, r"negative values", {}),
    "missing_png": lambda t: (str(t / "none.png"), r"none.png' does not exist", {}),
    "corrupt_png": lambda t: (_write(t, "bad.png", b"\x89PNG garbage"), r"cannot read mask", {}),
    "not_a_mask": lambda t: (3.5, r"is a float: give a mask", {}),
    "empty_list": lambda t: ([], r"has no mask", {}),
    "bad_threshold": lambda t: (ONE[0], r"mask_threshold must be in \(0, 1\]",
                                {"mask_threshold": 2.0}),
}


@pytest.mark.parametrize("name", sorted(MASK_CASES))
def test_read_masks(name, tmp_path):
    value, expected, kw = MASK_CASES[name](tmp_path)
    if isinstance(expected, str):
        with pytest.raises(UserInputError, match=expected):
            ui.read_masks(value, REF.shape, "reference 0", **kw)
    else:
        out = ui.read_masks(value, REF.shape, "reference 0", **kw)
        assert out.dtype == bool and np.array_equal(out, expected)


def test_jpeg_mask_with_threshold_is_close_to_the_original(tmp_path, caplog):
    out = ui.read_masks(_jpeg_mask(tmp_path), REF.shape, "m", mask_threshold=0.5)
    assert out.shape == ONE.shape
    iou = (out & ONE).sum() / (out | ONE).sum()
    assert iou > 0.9
    assert "binarised at mask_threshold=0.5" in caplog.text


@pytest.mark.parametrize("name", sorted(MASK_CASES))
def test_predictor_masks(predictor, name, tmp_path):
    value, expected, kw = MASK_CASES[name](tmp_path)
    if isinstance(expected, str):
        with pytest.raises(UserInputError, match=expected):
            predictor.set_reference(REF, value, **kw)
        return
    _same(_result(predictor, REF, value, TARGET, **kw), _result(predictor, REF, expected, TARGET))


# --------------------------------------------------------------------------- class ids
CLASS_CASES = {
    "ints": ([3, 7], [3, 7]),
    "numpy_ints": (np.array([3, 7], np.int64), [3, 7]),
    "torch_ints": (torch.tensor([3, 7]), [3, 7]),
    "negative": ([-1, 2], r"must be integers in 0\.\."),
    "float": ([1.0, 2], r"non-negative integers, got 1.0"),
    "float_array": (np.array([1.0, 2.0]), r"must be integers, got a float64 array"),
    "overflow": ([2**40, 1], r"must be integers in 0\.\.2147483647"),
    "bool": ([True, 1], r"non-negative integers, got True"),
    "string": (["cat", 1], r"non-negative integers, got 'cat'"),
    "too_few": ([1], r"1 class id\(s\) \[1\] for 2 mask"),
    "label_map_counts_each_value": ([5], r"for 2 mask"),
}


@pytest.mark.parametrize("name", sorted(CLASS_CASES))
def test_predictor_class_ids(predictor, name):
    labels, expected = CLASS_CASES[name]
    if isinstance(expected, str):
        with pytest.raises(UserInputError, match=expected):
            predictor.set_reference(REF, LABELS, labels)
        return
    predictor.set_reference(REF, LABELS, labels)
    assert predictor.predict(TARGET)["sem_seg_classes"].tolist() == expected


# ------------------------------------------------------------------ model and usage errors
def _corrupt_checkpoint(tmp):
    return _write(tmp, "model.pth", b"PK\x03\x04 definitely not a checkpoint")


MODEL_CASES = {
    "missing_config": (lambda t: ({"config_file": str(t / "none.yaml")}),
                       r"config file .*none.yaml' does not exist"),
    "unknown_key": (lambda t: ({"opts": ["MODEL.SINE.PAD_SIZ", "64"]}),
                    r"unknown config key 'MODEL.SINE.PAD_SIZ'.*did you mean MODEL.SINE.PAD_SIZE"),
    "odd_overrides": (lambda t: ({"opts": ["MODEL.SINE.PAD_SIZE"]}), r"KEY VALUE pairs"),
    "bad_value_type": (lambda t: ({"opts": ["MODEL.SINE.PAD_SIZE", "big"]}),
                       r"bad config override"),
    "missing_checkpoint": (lambda t: ({"weights": str(t / "none.pth")}),
                           r"checkpoint .*none.pth' .* does not exist"),
    "corrupt_checkpoint": (lambda t: ({"weights": _corrupt_checkpoint(t)}),
                           r"cannot load checkpoint .*model.pth.*corrupt"),
    "checkpoint_is_folder": (lambda t: ({"weights": str(t)}), r"is a folder, not a file"),
    "unknown_device": (lambda t: ({"device": "tpu"}), r"unknown device 'tpu'"),
}
if not torch.cuda.is_available():
    MODEL_CASES["cuda_on_cpu_machine"] = (lambda t: ({"device": "cuda"}),
                                          r"CUDA is not available here: use MODEL.DEVICE cpu")
    MODEL_CASES["cuda_in_config"] = (lambda t: ({"opts": ["MODEL.DEVICE", "cuda"]}),
                                     r"CUDA is not available")


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_from_config_file_errors(name, tmp_path):
    build, message = MODEL_CASES[name]
    kw = build(tmp_path)
    kw.setdefault("config_file", os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml"))
    kw["opts"] = [*TINY, *kw.get("opts", [])]
    with pytest.raises(UserInputError, match=message):
        SinePredictor.from_config_file(**kw)


def test_predict_before_set_reference_is_an_error():
    p = SinePredictor(get_sine_cfg(opts=TINY))
    with pytest.raises(UserInputError, match=r"call set_reference"):
        p.predict(TARGET)


def test_config_roots_of_the_cli_match_the_config():
    assert set(CONFIG_ROOTS) == set(get_sine_cfg().keys())
    head, opts = split_config_overrides(["--input", "IMG_1.JPG", "MODEL.X", "1", "--flag", "v"])
    assert head == ["--input", "IMG_1.JPG", "--flag", "v"] and opts == ["MODEL.X", "1"]


# ------------------------------------------------------------------------ video predictor
@pytest.fixture(scope="module")
def video_predictor(predictor):
    from sine.engine.video_predictor import VideoPredictor

    return VideoPredictor(predictor)


def test_video_step_before_start_is_an_error(predictor):
    from sine.engine.video_predictor import VideoPredictor

    fresh = VideoPredictor(predictor)
    with pytest.raises(UserInputError, match=r"call start\(frame, masks\)"):
        fresh.step(REF)
    fresh.reset()  # a new video whose objects appear later (YouTube-VOS): empty frames first
    assert fresh.step(REF).masks == {} and not fresh.step(REF).labels.any()


VIDEO_MASK_CASES = {
    "label_map": (lambda t: LABELS, {1: MASKS[0], 2: MASKS[1]}),
    "palette_png": (lambda t: _palette_mask(t), {1: MASKS[0], 2: MASKS[1]}),
    "binary_bool": (lambda t: MASKS[0], {1: MASKS[0]}),
    "binary_0_255_png": (lambda t: _png(t, "b.png", MASKS[0].astype(np.uint8) * 255),
                         {1: MASKS[0]}),
    "dict_of_tensors": (lambda t: {3: torch.from_numpy(MASKS[1])}, {3: MASKS[1]}),
    "void_ignored": (lambda t: np.where(LABELS == 2, 255, LABELS).astype(np.uint8),
                     {1: MASKS[0]}),
    "dict_zero_id": (lambda t: {0: MASKS[0]}, r"object ids must be integers >= 1"),
    "dict_float_id": (lambda t: {1.0: MASKS[0]}, r"object ids must be integers >= 1"),
    "dict_label_map_value": (lambda t: {1: LABELS}, r"holds 2 objects"),
    "empty_dict": (lambda t: {}, r"no object to track"),
    "empty_label_map": (lambda t: np.zeros((H, W), np.uint8), r"is empty"),
    "wrong_size": (lambda t: LABELS[:10], r"same height and width"),
    "soft_float": (lambda t: _soft(MASKS[0]), r"mask_threshold"),
}


@pytest.mark.parametrize("name", sorted(VIDEO_MASK_CASES))
def test_video_first_masks(video_predictor, name, tmp_path):
    build, expected = VIDEO_MASK_CASES[name]
    value = build(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(UserInputError, match=expected):
            video_predictor.start(REF, value)
        return
    got = ui.masks_by_object_id(value, REF.shape)
    assert sorted(got) == sorted(expected)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)
    result = video_predictor.start(REF, value)
    assert sorted(result.masks) == sorted(expected)
    assert sorted(video_predictor.step(_rgb(H, W, 5)).masks) == sorted(expected)


# ------------------------------------------------------------------------------- CLIs
@pytest.fixture
def demo_cli(predictor, monkeypatch):
    """demo/demo.py's main with the tiny predictor (building one per case would be slow)."""
    import demo.demo as demo

    monkeypatch.setattr(demo, "build_predictor", lambda args: predictor)
    return demo


def _cli(main, argv, capsys):
    status = run_cli(main, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def _files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# Cases whose input is a file (what a command line takes); folders are tested as batches.
CLI_IMAGE_CASES = [
    "16bit_gray_png", "cmyk_jpeg", "corrupt_file", "float_tiff_path", "la_png", "missing_file",
    "palette_png", "rgba_transparent_corner_png", "text_file", "truncated_png", "uint8_rgb_path",
]
CLI_MESSAGES = {"missing_file": r"nope.png' matches no file"}  # --input also takes globs
CLI_MASK_CASES = [
    "16bit_png", "binary_png_path", "corrupt_png", "jpeg_refused", "label_map_grey_png",
    "label_map_palette_png", "list_of_png_files", "missing_png", "mode_1_png",
]


@pytest.mark.parametrize("name", CLI_IMAGE_CASES)
def test_demo_cli_targets(demo_cli, predictor, name, tmp_path, capsys):
    value, expected = _build_image(name, tmp_path, TARGET)
    expected = CLI_MESSAGES.get(name, expected)
    ref, mask = _png(tmp_path, "ref.png", REF), _png(tmp_path, "lab.png", LABELS)
    out = tmp_path / "out"
    status, err = _cli(demo_cli.main, ["--ref-image", ref, "--ref-mask", mask, "--input",
                                       str(value), "--output", str(out)], capsys)
    if isinstance(expected, str):
        assert status == 2 and err.startswith("error: ") and __import__("re").search(
            expected, err), err
        assert _files(out) == []  # nothing written
        return
    assert status == 0, err
    stem = os.path.splitext(os.path.basename(str(value)))[0]
    saved = np.load(out / f"{stem}_masks.npz")
    _, id_masks = _result(predictor, REF, MASKS, expected)
    assert np.array_equal(saved["id_masks"], id_masks)


@pytest.mark.parametrize("name", CLI_MASK_CASES)
def test_demo_cli_masks(demo_cli, predictor, name, tmp_path, capsys):
    import re

    value, expected, kw = MASK_CASES[name](tmp_path)
    ref, target = _png(tmp_path, "ref.png", REF), _png(tmp_path, "t.png", TARGET)
    out = tmp_path / "out"
    masks = value if isinstance(value, list) else [value]
    status, err = _cli(demo_cli.main, ["--ref-image", ref, "--ref-mask", *map(str, masks),
                                       "--input", target, "--output", str(out)], capsys)
    if isinstance(expected, str):
        assert status == 2 and re.search(expected.replace("mask_threshold", "--mask-threshold"),
                                         err), err
        assert _files(out) == []
        return
    assert status == 0, err
    saved = np.load(out / "t_masks.npz")
    _, id_masks = _result(predictor, REF, expected, TARGET)
    assert np.array_equal(saved["id_masks"], id_masks)


CLI_ARG_CASES = {
    "float_class": (["--ref-class", "1.5", "2"], r"--ref-class '1.5' is not an integer"),
    "negative_class": (["--ref-class", "-1", "2"], r"integers in 0\.\."),
    "overflow_class": (["--ref-class", str(2**40), "2"], r"integers in 0\.\."),
    "class_count": (["--ref-class", "1"], r"1 class id\(s\) \[1\] for 2 mask"),
    "names_count": (["--ref-names", "cat"], r"--ref-names gives 1 name\(s\) for 2"),
    "names_conflict": (["--ref-class", "0", "0", "--ref-names", "cat", "dog"],
                       r"class 0 is named both 'cat' and 'dog'"),
    "jpeg_mask_threshold": (["--mask-threshold", "0.5"], None),
    "bad_mask_threshold": (["--mask-threshold", "7"], r"mask_threshold must be in"),
    "input_folder_without_images": (["--input", "EMPTY"], r"is a folder without image files"),
    "glob_matches_nothing": (["--input", "nothing*.png"], r"matches no file"),
    "empty_list_file": (["--input", "LIST"], r"lists no file"),
    "no_reference": (["--no-ref"], r"either as --ref-image"),
    "mask_without_image": (["--no-ref-image"], r"--ref-mask needs --ref-image"),
}


@pytest.mark.parametrize("name", sorted(CLI_ARG_CASES))
def test_demo_cli_arguments(demo_cli, name, tmp_path, capsys):
    import re

    extra, message = CLI_ARG_CASES[name]
    ref, target = _png(tmp_path, "ref.png", REF), _png(tmp_path, "t.png", TARGET)
    masks = [_png(tmp_path, "a.png", MASKS[0].astype(np.uint8) * 255),
             _png(tmp_path, "b.png", MASKS[1].astype(np.uint8) * 255)]
    if name == "jpeg_mask_threshold":
        masks = [_jpeg_mask(tmp_path)]
    (tmp_path / "empty").mkdir()
    (tmp_path / "list.txt").write_text("# nothing\n")
    extra = [str(tmp_path / "empty") if e == "EMPTY" else str(tmp_path / "list.txt")
             if e == "LIST" else str(tmp_path / e) if e == "nothing*.png" else e for e in extra]
    ref_args = ["--ref-image", ref, "--ref-mask", *masks]
    if "--no-ref" in extra:
        ref_args, extra = [], []
    elif "--no-ref-image" in extra:
        ref_args, extra = ["--ref-mask", *masks], []
    inputs = [] if "--input" in extra else ["--input", target]
    out = tmp_path / "out"
    status, err = _cli(demo_cli.main, [*ref_args, *inputs, *extra, "--output", str(out)], capsys)
    if message is None:
        assert status == 0, err
        assert _files(out) == ["t_masks.npz", "t_sine.png"]
    else:
        assert status == 2 and re.search(message, err), err
        assert _files(out) == []


def test_demo_cli_model_errors_without_traceback(tmp_path, capsys):
    """Real predictor builds: config, checkpoint and device errors are one line each."""
    import demo.demo as demo

    ref, target = _png(tmp_path, "ref.png", REF), _png(tmp_path, "t.png", TARGET)
    mask = _png(tmp_path, "lab.png", LABELS)
    base = ["--ref-image", ref, "--ref-mask", mask, "--input", target, "--output",
            str(tmp_path / "out")]
    cases = [
        (["--config-file", str(tmp_path / "none.yaml")], r"config file .* does not exist"),
        ([*TINY, "MODEL.WEIGHTS", _corrupt_checkpoint(tmp_path)], r"cannot load checkpoint"),
        ([*TINY, "MODEL.WEIGHTS", str(tmp_path / "none.pth")], r"none.pth' .*does not exist"),
        ([*TINY, "MODEL.SINE.NOT_A_KEY", "1"], r"unknown config key 'MODEL.SINE.NOT_A_KEY'"),
    ]
    if not torch.cuda.is_available():
        cases.append(([*TINY, "--device", "cuda"], r"CUDA is not available"))
    import re

    for extra, message in cases:
        status, err = _cli(demo.main, [*base, *extra], capsys)
        assert status == 2 and re.search(message, err), (extra, err)
        assert _files(tmp_path / "out") == []
    # --debug shows the traceback instead
    with pytest.raises(UserInputError):
        run_cli(demo.main, [*base, "--config-file", str(tmp_path / "none.yaml"), "--debug"])


def test_demo_cli_batch_skip_errors_and_summary(demo_cli, tmp_path, capsys):
    ref, mask = _png(tmp_path, "ref.png", REF), _png(tmp_path, "lab.png", LABELS)
    folder = tmp_path / "targets"
    folder.mkdir()
    _png(folder, "a.png", TARGET)
    _png(folder, "b.jpg", TARGET)
    _write(folder, "c.png", b"broken")
    listed = tmp_path / "list.txt"
    listed.write_text("targets/a.png\n")
    out = tmp_path / "out"
    argv = ["--ref-image", ref, "--ref-mask", mask, "--output", str(out), "--input"]
    status, err = _cli(demo_cli.main, [*argv, str(folder)], capsys)
    assert status == 2 and "c.png" in err and "nothing was written" in err
    assert _files(out) == []
    status, err = _cli(demo_cli.main, [*argv, str(folder), "--skip-errors"], capsys)
    assert status == 3 and "2 target(s) written, 1 failed" in err and "c.png" in err
    assert _files(out) == ["a_masks.npz", "a_sine.png", "b_masks.npz", "b_sine.png"]
    status, err = _cli(demo_cli.main, [*argv, str(listed)], capsys)  # a list file
    assert status == 0 and "1 target(s) written, 0 failed" in err
    status, err = _cli(demo_cli.main, [*argv, str(folder / "*.png"), "--skip-errors"], capsys)
    assert status == 3 and "1 target(s) written, 1 failed" in err  # a glob


def test_demo_cli_splits_label_maps_and_names_classes(demo_cli, tmp_path, capsys):
    ref, target = _png(tmp_path, "ref.png", REF), _png(tmp_path, "t.png", TARGET)
    mask = _png(tmp_path, "lab.png", LABELS)
    out = tmp_path / "out"
    status, err = _cli(demo_cli.main, ["--ref-image", ref, "--ref-mask", mask, "--ref-names",
                                       "cat", "dog", "--input", target, "--output", str(out)],
                       capsys)
    assert status == 0, err
    saved = np.load(out / "t_masks.npz")
    assert saved["id_ids"].tolist() == [0, 1]  # the label map's two objects
    assert saved["id_classes"].tolist() == [0, 1]
    assert saved["class_names"].tolist() == ["cat", "dog"]


# -------------------------------------------------------------------------- video CLI
def _video_folder(tmp, sizes, name="frames"):
    folder = tmp / name
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        _png(folder, f"{i:05d}.png", _rgb(h, w, i))
    return folder


@pytest.fixture
def video_cli(video_predictor, monkeypatch):
    import demo.demo_video as dv
    from sine.engine.video_predictor import VideoPredictor

    monkeypatch.setattr(VideoPredictor, "from_config_file",
                        classmethod(lambda cls, *a, **k: video_predictor))
    return dv


@pytest.mark.parametrize("output", ["out.gif", "out.mp4", "frames_out"])
def test_demo_video_outputs_keep_every_frame(video_cli, tmp_path, capsys, output):
    frames = _video_folder(tmp_path, [(H, W), (H, W), (H + 6, W + 10), (H, W)])
    mask = _png(tmp_path, "m.png", LABELS)
    out = tmp_path / output
    status, err = _cli(video_cli.main, ["--input", str(frames), "--mask", mask, "--output",
                                        str(out)], capsys)
    assert status == 0, err
    assert "4 frame(s), 2 object(s)" in err
    if output.endswith(".gif"):
        assert out.is_file()
        with Image.open(out) as gif:
            assert gif.n_frames == 4
    elif output.endswith(".mp4"):
        import cv2

        cap = cv2.VideoCapture(str(out))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4  # the resized frame is kept
        cap.release()
    else:
        assert _files(out) == [f"{i:05d}.png" for i in range(4)]
    if not output.startswith("frames"):
        assert "1 resized" in err
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


VIDEO_CLI_CASES = {
    "missing_input": (lambda t: ["--input", str(t / "none.mp4")], r"does not exist"),
    "empty_folder": (lambda t: ["--input", str(_mkdir(t / "empty"))], r"has no frames"),
    "not_a_video": (lambda t: ["--input", _write(t, "x.mp4", b"nope")], r"OpenCV cannot open"),
    "bad_output_ext": (lambda t: ["--output", str(t / "out.xyz")], r"unknown extension '.xyz'"),
    "empty_mask": (lambda t: ["--mask", _png(t, "e.png", np.zeros((H, W), np.uint8))],
                   r"is empty"),
    "mask_size": (lambda t: ["--mask", _png(t, "s.png", LABELS[:20])],
                  r"same height and width"),
    "jpeg_mask": (lambda t: ["--mask", _jpeg_mask(t)], r"JPEG is lossy"),
    "corrupt_frame": (lambda t: ["--input", str(_corrupt_frames(t))], r"cannot read image file"),
}


def _mkdir(path):
    path.mkdir()
    return path


def _corrupt_frames(tmp):
    folder = _video_folder(tmp, [(H, W), (H, W)], "corrupt")
    (folder / "00002.png").write_bytes(b"broken")
    return folder


@pytest.mark.parametrize("name", sorted(VIDEO_CLI_CASES))
def test_demo_video_errors(video_cli, name, tmp_path, capsys):
    import re

    build, message = VIDEO_CLI_CASES[name]
    frames = _video_folder(tmp_path, [(H, W), (H, W)])
    argv = {"--input": str(frames), "--mask": _png(tmp_path, "m.png", LABELS),
            "--output": str(tmp_path / "out.gif")}
    extra = build(tmp_path)
    argv[extra[0]] = extra[1]
    status, err = _cli(video_cli.main, [x for kv in argv.items() for x in kv], capsys)
    assert status == 2 and re.search(message, err), err
    assert not (tmp_path / "out.gif").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_clis_answer_help_without_importing_torch():
    import subprocess
    import sys

    for script in ("demo/demo.py", "demo/demo_video.py", "demo/app.py"):
        code = ("import runpy, sys; sys.argv = ['x', '--help']\n"
                f"try:\n    runpy.run_path({os.path.join(ROOT, script)!r}, run_name='__main__')\n"
                "except SystemExit:\n    pass\n"
                "print('heavy:', sorted(m for m in ('torch', 'detectron2', 'gradio') "
                "if m in sys.modules))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, cwd="/")
        assert "heavy: []" in proc.stdout, (script, proc.stdout[-500:], proc.stderr[-2000:])
        assert "KEY VALUE" in proc.stdout  # the shared override convention is documented


# ---------------------------------------------------------------------------------- app
# Arrays as the app's Run function receives them (files are decoded by gradio itself).
APP_IMAGE_CASES = [n for n in sorted(IMAGE_CASES) if n not in CLI_IMAGE_CASES and n not in (
    "folder", "pil_path_object", "not_an_image")]


def _as_app_value(value):
    """What gradio hands the app for an upload: a numpy array (PIL decodes files)."""
    if isinstance(value, str):
        return np.asarray(Image.open(value))
    if isinstance(value, Image.Image):
        return np.asarray(value)
    return value.numpy() if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize("name", APP_IMAGE_CASES)
def test_app_targets(predictor, name, tmp_path):
    gr = pytest.importorskip("gradio")
    from demo.app import segment

    value, expected = _build_image(name, tmp_path, TARGET)
    value = _as_app_value(value)
    if name in ("torch_chw_uint8", "torch_chw_float"):
        value = value.transpose(1, 2, 0)  # gradio gives (H, W, C)
    editor = {"background": REF, "layers": []}
    if isinstance(expected, str):
        with pytest.raises(gr.Error, match=expected):
            segment(predictor, editor, LABELS, value, 0.5)
        return
    out = segment(predictor, editor, LABELS, value, 0.5)
    plain = segment(predictor, editor, LABELS, expected, 0.5)
    assert all(np.array_equal(a, b) for a, b in zip(out[:3], plain[:3]))


APP_MASK_CASES = [n for n in sorted(MASK_CASES) if n not in (
    "list_of_png_files", "stack_nhw", "torch_stack", "one_of_two_empty", "empty_list",
    "missing_png", "corrupt_png", "not_a_mask", "jpeg_refused")]


@pytest.mark.parametrize("name", APP_MASK_CASES)
def test_app_masks(predictor, name, tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from demo.app import segment

    value, expected, kw = MASK_CASES[name](tmp_path)
    value = _as_app_value(value)
    used = []
    set_reference = predictor.set_reference
    monkeypatch.setattr(predictor, "set_reference",
                        lambda im, m, *a, **k: used.append(m) or set_reference(im, m, *a, **k))
    editor = {"background": REF, "layers": []}
    threshold = kw.get("mask_threshold")
    if isinstance(expected, str):
        with pytest.raises(gr.Error, match=expected):
            segment(predictor, editor, value, TARGET, 0.5, "", threshold)
        return
    status = segment(predictor, editor, value, TARGET, 0.5, "", threshold)[-1]
    assert np.array_equal(used[-1], expected)
    assert f"{len(expected)} reference object(s)" in status


def test_app_class_names_are_shown(predictor):
    pytest.importorskip("gradio")
    from demo.app import segment

    status = segment(predictor, {"background": REF, "layers": []}, LABELS, TARGET, 0.5,
                     "cat, dog")[-1]
    assert "#0 cat, #1 dog" in status
    gr = pytest.importorskip("gradio")
    with pytest.raises(gr.Error, match=r"names 3 classes for 2 reference objects"):
        segment(predictor, {"background": REF, "layers": []}, LABELS, TARGET, 0.5, "a, b, c")
