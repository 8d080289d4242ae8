"""Your own data end to end, from a directory outside the repository: write a small COCO-format
dataset, fine-tune on it (annotations with ids), evaluate on held-out data (without ids)."""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.DINOV2.EMBED_DIM", "48", "MODEL.DINOV2.DEPTH", "1",
    "MODEL.DINOV2.NUM_HEADS", "2", "MODEL.SINE.FEAT_CHANS", "32", "MODEL.SINE.MASK_DIM", "32",
    "MODEL.SINE.NHEADS", "2", "MODEL.SINE.DIM_FEEDFORWARD", "64", "MODEL.SINE.DEC_LAYERS", "1",
    "MODEL.SINE.TRAIN_NUM_POINTS", "256", "MODEL.SINE.PAD_SIZE", "112", "INPUT.IMAGE_SIZE",
    "112", "TEST.FSS.IMAGE_SIZE", "112",
]


def _run(cwd, *args, ok=True):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "sine.own_data", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_register_finetune_and_evaluate_from_outside_the_repository(tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    _run(work, "example", "mydata")
    val = json.loads((work / "mydata" / "val.json").read_text())
    assert val["annotations"] and all("id" not in a for a in val["annotations"])
    _run(work, "train", "--train-json", "mydata/train.json", "--train-images", "mydata/train",
         "--output", "run", *TINY, "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
         "SOLVER.WARMUP_ITERS", "1", "SOLVER.MAX_ITER", "2")
    assert (work / "run" / "model_final.pth").is_file()
    proc = _run(work, "eval", "--test-json", "mydata/val.json", "--test-images", "mydata/val",
                "--ref-json", "mydata/train.json", "--ref-images", "mydata/train",
                "--weights", "run/model_final.pth", "--output", "run/eval", "--episodes", "6",
                *TINY)
    result = json.loads((work / "run" / "eval" / "evaluation.json").read_text())
    assert 0.0 <= result["fss_1shot"]["mIoU"] <= 100.0
    assert result["fss_1shot"]["mIoU"] == json.loads(
        (work / "run" / "eval" / "inference" / "own_test_fss_1shot" / "fss_results.json"
         ).read_text())["scores"]["mIoU"]
    segm = result["coco_segm"]
    assert {"AP", "AP50", "AP75"} <= set(segm) and all(
        math.isfinite(segm[k]) and 0.0 <= segm[k] <= 100.0 for k in ("AP", "AP50", "AP75"))
    assert result["ap_images"] == len(val["images"])  # every held-out image scored
    predictions = json.loads((work / "run" / "eval" / "coco_instances_results.json").read_text())
    assert {p["image_id"] for p in predictions} <= {i["id"] for i in val["images"]}
    assert "COCO mask AP" in proc.stderr


def test_own_data_errors_are_clear_before_any_work(tmp_path):
    _run(tmp_path, "example", "mydata", "--num-train", "2", "--num-val", "2")
    base = ["--train-images", "mydata/train", "--output", "run", *TINY]
    cases = [
        (["train", "--train-json", "nope.json", *base], "'nope.json' is not a file"),
        (["train", "--train-json", "mydata/train.json", "--weights", "none.pth", *base],
         "checkpoint .*none.pth' .*does not exist"),
        (["eval", "--test-json", "mydata/val.json", "--test-images", "mydata/val",
          "--ref-json", "mydata/train.json", "--output", "ev", *TINY],
         "--ref-json needs --ref-images"),
    ]
    import re

    for argv, message in cases:
        proc = _run(tmp_path, *argv, ok=False)
        assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / "run" / "model_final.pth").exists()
