"""demo/demo.py end to end on a tiny random SINE: output files, their sizes, and clear errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from demo.demo import main
from demo.visualize import fit_size
from tests.tiny_model import TINY_MODEL_OPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml")
TINY = list(TINY_MODEL_OPTS)
TARGETS = {"wide": (60, 200, ".jpg"), "tall": (150, 90, ".png")}  # name: (H, W, ext)


def _shapes_image(h, w, seed):
    """(h, w, 3) uint8: a grey background with a few coloured rectangles."""
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 200, np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        image[y: y + h // 3, x: x + w // 3] = rng.integers(0, 255, 3)
    return image


def _save_mask(path, mask):
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return str(path)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 120x160 reference with two masks and two targets of different sizes."""
    d = tmp_path_factory.mktemp("demo_cli")
    Image.fromarray(_shapes_image(120, 160, 0)).save(d / "ref.png")
    m1, m2 = np.zeros((2, 120, 160), bool)
    m1[10:50, 20:70], m2[60:110, 90:150] = True, True
    (d / "targets").mkdir()
    for name, (h, w, ext) in TARGETS.items():
        Image.fromarray(_shapes_image(h, w, len(name))).save(d / "targets" / f"{name}{ext}")
    return {"dir": d, "ref": str(d / "ref.png"), "masks": [_save_mask(d / "m1.png", m1),
                                                          _save_mask(d / "m2.png", m2)]}


def _check_outputs(out_dir, n_refs, classes):
    for name, (h, w, _) in TARGETS.items():
        with Image.open(out_dir / f"{name}_sine.png") as vis:  # reference + 3 panels
            dh, dw = fit_size(h, w, 1600)  # drawn size: tiny targets are enlarged
            assert vis.size[0] > 3 * dw and dh < vis.size[1] < 2 * dh
        arrays = np.load(out_dir / f"{name}_masks.npz")
        assert arrays["id_masks"].shape == (n_refs, h, w)
        assert arrays["id_masks"].dtype == bool
        assert arrays["id_ids"].tolist() == list(range(n_refs))  # row k = reference mask k
        assert arrays["instance_masks"].shape[1:] == (h, w)
        assert (arrays["instance_scores"] > 0.5).all()  # --confidence-threshold default
        assert arrays["semantic_masks"].shape == (len(classes), h, w)
        assert arrays["semantic_classes"].tolist() == classes


def test_command_line_writes_overlay_and_masks_per_target(scene, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(ROOT, "demo/demo.py"), "--config-file", CONFIG,
           "--ref-image", scene["ref"], "--ref-mask", *scene["masks"], "--ref-class", "4", "9",
           "--input", str(scene["dir"] / "targets" / "*"), "--output", str(out),
           "--device", "cpu", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_outputs(out, n_refs=2, classes=[4, 9])


def test_coco_reference(scene, tmp_path):
    polygon = [[10, 10, 70, 10, 70, 50, 10, 50]]  # x, y pairs of a 60x40 rectangle
    coco = {
        "images": [{"id": 5, "file_name": "ref.png", "height": 120, "width": 160}],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "segmentation": polygon, "iscrowd": 0,
             "area": 2400, "bbox": [10, 10, 60, 40]},
            {"id": 2, "image_id": 5, "category_id": 3, "iscrowd": 0, "area": 3000,
             "segmentation": [[90, 60, 150, 60, 150, 110, 90, 110]], "bbox": [90, 60, 60, 50]},
            {"id": 3, "image_id": 5, "category_id": 3, "iscrowd": 1, "area": 100,
             "segmentation": [[0, 0, 10, 0, 10, 10]], "bbox": [0, 0, 10, 10]},  # ignored
        ],
    }
    ann = scene["dir"] / "ann.json"
    ann.write_text(json.dumps(coco))
    out = tmp_path / "out"
    main(["--config-file", CONFIG, "--ref-coco", str(ann), "--ref-image-id", "5",
          "--input", str(scene["dir"] / "targets" / "*"), "--output", str(out), "--opts", *TINY])
    _check_outputs(out, n_refs=2, classes=[3, 7])
    with pytest.raises(ValueError, match="image id 6 is not in"):
        main(["--ref-coco", str(ann), "--ref-image-id", "6", "--input", scene["ref"],
              "--output", str(out), "--opts", *TINY])


def _bad_files(d):
    bad = d / "bad"
    bad.mkdir(exist_ok=True)
    _save_mask(bad / "small_mask.png", np.ones((60, 80), bool))
    _save_mask(bad / "empty_mask.png", np.zeros((120, 160), bool))
    (bad / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return bad


@pytest.mark.parametrize(
    "case, message",
    [
        ("mask_size", r"small_mask.png.*\(60, 80\).*160x120"),
        ("empty_mask", r"empty_mask.png.* is empty"),
        ("unreadable_mask", r"cannot (read|decode) mask file .*broken.jpg"),
        ("unreadable_target", r"cannot (read|decode) image file .*broken.jpg"),
        ("no_match", r"--input .*nothing\*.png.* matches no file"),
        ("class_count", r"--ref-class: 3 class id\(s\) \[0, 1, 2\] for 2 mask"),
        ("no_reference", r"either as --ref-image"),
    ],
)
def test_bad_inputs_name_the_problem(scene, tmp_path, case, message):
    bad = _bad_files(scene["dir"])
    ref, masks, target = ["--ref-image", scene["ref"]], scene["masks"], scene["ref"]
    extra = []
    if case == "mask_size":
        masks = [masks[0], str(bad / "small_mask.png")]
    elif case == "empty_mask":
        masks = [str(bad / "empty_mask.png")]
    elif case == "unreadable_mask":
        masks = [str(bad / "broken.jpg")]
    elif case == "unreadable_target":
        target = str(bad / "broken.jpg")
    elif case == "no_match":
        target = str(bad / "nothing*.png")
    elif case == "class_count":
        extra = ["--ref-class", "0", "1", "2"]
    elif case == "no_reference":
        ref, masks = [], []
    argv = ["--config-file", CONFIG, *ref, *(["--ref-mask", *masks] if masks else []), *extra,
            "--input", target, "--output", str(tmp_path), "--opts", *TINY]
    with pytest.raises(ValueError, match=message):
        main(argv)


def test_id_overlay_colours_each_object_by_its_reference_id():
    """The same reference object gets the same colour on every target; the rest is untouched."""
    import torch
    from detectron2.structures import Instances

    from demo.visualize import _PALETTE, draw_identity

    image = np.full((200, 300, 3), 128, np.uint8)
    colours = {}
    for shift in (0, 100):  # two "targets": the object moved
        ids = Instances((200, 300))
        ids.pred_masks = torch.zeros(1, 200, 300, dtype=torch.bool)
        ids.pred_masks[0, 25:150, 25 + shift:150 + shift] = True
        ids.pred_ids, ids.scores = torch.tensor([3]), torch.tensor([0.9])
        panel = draw_identity(image, ids)
        assert panel.image.shape == image.shape and "reference #3" in panel.caption
        inside = panel.image[25:150, 25 + shift:150 + shift].reshape(-1, 3)
        colours[shift] = np.median(inside, axis=0)  # the tint, not the outline or the label
        assert (panel.image[190, 290] == 128).all()  # outside the mask
    assert (colours[0] == colours[100]).all()
    expected = 0.5 * 128 + 0.5 * 255 * _PALETTE[3]  # alpha-blended palette colour of id 3
    assert np.abs(colours[0] - expected).max() < 30
