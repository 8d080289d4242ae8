"""python -m sine.label: COCO predictions loadable by pycocotools, names, resume, skip errors."""
import contextlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from sine.engine.predictor import SinePredictor
from sine.utils.cli import run_cli
from tests.tiny_model import TINY_MODEL_OPTS

TINY = [*TINY_MODEL_OPTS, "MODEL.SINE.TEST.INSTANCE_SCORE_THRESH", "-1.0"]


def _scene(h, w, seed):
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 200, np.uint8)
    boxes = []
    for k in range(2):
        y, x = int(rng.integers(0, h - 30)), int(rng.integers(0, w - 40))
        image[y:y + 25, x:x + 35] = (220, 40, 30) if k == 0 else (30, 70, 220)
        boxes.append((x, y, 35, 25))
    return image, boxes


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny random model saved once: every run labels with the same weights."""
    import torch

    from sine.config import get_sine_cfg

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save(SinePredictor(get_sine_cfg(opts=TINY)).model.state_dict(), path)
    return str(path)


@pytest.fixture
def data(tmp_path, weights):
    """Two reference images (categories 3 "cat" and 8 "dog") and five images to label."""
    refs = {"images": [], "annotations": [],
            "categories": [{"id": 3, "name": "cat"}, {"id": 8, "name": "dog"}]}
    for i in (1, 2):
        image, boxes = _scene(80, 100, i)
        Image.fromarray(image).save(tmp_path / f"ref{i}.png")
        refs["images"].append({"id": i, "file_name": f"ref{i}.png", "height": 80, "width": 100})
        for (x, y, w, h), cat in zip(boxes, (3, 8)):
            refs["annotations"].append({
                "id": len(refs["annotations"]) + 1, "image_id": i, "category_id": cat,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "iscrowd": 0,
                "area": w * h, "bbox": [x, y, w, h]})
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    (tmp_path / "weights").write_text(weights)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(_scene(60 + 10 * i, 90, 10 + i)[0]).save(folder / f"img{i}.jpg")
    return tmp_path


def _argv(data, output, *extra):
    return ["--ref-coco", str(data / "refs.json"), "--images", str(data / "images"),
            "--output", str(output), "--score-thresh", "0.0", *extra, *TINY,
            "MODEL.WEIGHTS", (data / "weights").read_text()]


def _run(argv, capsys):
    from sine.label import main

    status = run_cli(main, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def test_writes_coco_predictions_loadable_by_pycocotools(data, capsys, monkeypatch):
    from pycocotools.coco import COCO

    calls = []
    set_reference = SinePredictor.set_reference
    monkeypatch.setattr(SinePredictor, "set_reference",
                        lambda self, *a, **k: calls.append(1) or set_reference(self, *a, **k))
    out = data / "labels.json"
    status, err = _run(_argv(data, out, "--overlays", str(data / "overlays")), capsys)
    assert status == 0, err
    assert calls == [1]  # reference features computed once for the whole folder
    assert "images/s" in err and "labelled 5 image(s)" in err
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out))  # a COCO instance file (pre-labels) ...
        results = coco.loadRes(coco.dataset["annotations"])  # ... and a valid result list
    assert len(coco.imgs) == 5
    assert {c["name"] for c in coco.dataset["categories"]} == {"cat", "dog"}
    anns = coco.dataset["annotations"]
    assert anns and {a["category_id"] for a in anns} <= {3, 8}
    assert all(0.0 <= a["score"] <= 1.0 and a["area"] > 0 for a in anns)
    for ann in anns[:5]:  # RLE masks of the image's size
        info = coco.imgs[ann["image_id"]]
        assert coco.annToMask(ann).shape == (info["height"], info["width"])
    assert len(results.anns) == len(anns)
    assert sorted(os.listdir(data / "overlays")) == [f"img{i}.png" for i in range(5)]
    assert not os.path.exists(str(out) + ".partial.jsonl")


def test_resumes_after_interruption_with_the_same_final_file(data, capsys, monkeypatch):
    full = data / "full.json"
    assert _run(_argv(data, full), capsys)[0] == 0
    out = data / "resumed.json"
    predict = SinePredictor.predict
    count = []

    def interrupted(self, *a, **k):
        if len(count) == 2:
            raise KeyboardInterrupt
        count.append(1)
        return predict(self, *a, **k)

    monkeypatch.setattr(SinePredictor, "predict", interrupted)
    status, err = _run(_argv(data, out), capsys)
    assert status == 130 and not out.exists()
    journal = str(out) + ".partial.jsonl"
    assert len(open(journal).read().splitlines()) == 1 + 2  # header + two labelled images
    monkeypatch.setattr(SinePredictor, "predict", predict)
    status, err = _run(_argv(data, out), capsys)
    assert status == 0 and "2 from a previous run" in err and "labelled 3 image(s)" in err
    assert json.loads(out.read_text()) == json.loads(full.read_text())
    assert not os.path.exists(journal)


def test_resume_with_other_options_is_refused(data, capsys, monkeypatch):
    out = data / "labels.json"
    (data / "labels.json.partial.jsonl").write_text(json.dumps({"fingerprint": "other"}) + "\n")
    status, err = _run(_argv(data, out), capsys)
    assert status == 2 and "partial results of a run with other" in err


def test_acceleration_reaches_the_predictor_and_is_part_of_the_run(data, capsys, monkeypatch):
    import sine.engine.predictor as predictor_module

    chosen = []
    accelerate = predictor_module.accelerate
    monkeypatch.setattr(predictor_module, "accelerate",
                        lambda model, name, *a: chosen.append(name) or accelerate(model, name, *a))
    out = data / "int8.json"
    status, err = _run(_argv(data, out, "--acceleration", "int8"), capsys)
    assert status == 0, err
    assert chosen == ["int8"] and json.loads(out.read_text())["images"]
    # A run interrupted with one option does not resume with another.
    journal = data / "int8.json.partial.jsonl"
    monkeypatch.setattr(SinePredictor, "predict", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    assert _run(_argv(data, out, "--acceleration", "int8"), capsys)[0] == 130
    assert journal.exists()
    status, err = _run(_argv(data, out), capsys)
    assert status == 2 and "partial results of a run with other" in err


def test_unreadable_images_stop_or_are_skipped(data, capsys):
    (data / "images" / "zz_broken.png").write_bytes(b"broken")
    out = data / "labels.json"
    status, err = _run(_argv(data, out), capsys)
    assert status == 2 and "zz_broken.png" in err and "nothing was labelled" in err
    assert not out.exists()
    status, err = _run(_argv(data, out, "--skip-errors"), capsys)
    assert status == 3 and "1 failed" in err
    assert len(json.loads(out.read_text())["images"]) == 5


def test_bad_references_are_clear_errors(data, capsys):
    argv = _argv(data, data / "o.json")
    argv[1] = str(data / "missing.json")
    assert _run(argv, capsys)[1].startswith("error: --ref-coco")
    status, err = _run(_argv(data, data / "o.json", "--ref-image-ids", "9"), capsys)
    assert status == 2 and "image id 9 is not in" in err
