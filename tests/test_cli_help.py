"""`--help` of every command line answers without importing torch (lazy imports), and sine
still registers its models and datasets with detectron2 before anything needs them.

Checked through what is imported, not through wall time: a `--help` that loads torch takes
seconds, one that does not takes a fraction of a second.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEAVY = ("torch", "detectron2", "cv2")

#: Every command-line entry point of the project (benchmarks/ excepted): module or script path.
ENTRY_POINTS = [
    "sine.label", "sine.own_data", "inference_fss.eval", "inference_fsod.eval",
    "inference_vos.run_vos", "train_net.py", "tools/export_onnx.py", "tools/demo_job.py",
    "tools/convert_official_checkpoint.py", "tools/install_deps.py", "tools/install_detectron2.py",
    "tools/install_panopticapi.py", "demo/demo.py", "demo/demo_video.py", "demo/app.py",
    "datasets/prepare_synthetic.py", "datasets/prepare_pascal_part.py",
    "datasets/prepare_objects365_sam.py",
]

# Runs one entry point as `python -m X --help` / `python X.py --help` would, then reports the
# exit status and which heavy modules were imported.
_RUN_HELP = """
import json, runpy, sys
entry = sys.argv[1]
status = None
sys.argv = [entry, "--help"]
try:
    if entry.endswith(".py"):
        runpy.run_path(entry, run_name="__main__")
    else:
        runpy.run_module(entry, run_name="__main__", alter_sys=True)
except SystemExit as e:
    status = e.code
finally:
    loaded = [m for m in %r if m in sys.modules]
    print("\\n" + json.dumps({"status": status, "loaded": loaded}))
""" % (HEAVY,)


def _run(code, *args, cwd, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, DETECTRON2_DATASETS=str(tmp_path / "no_datasets"))
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_entry_point_is_listed():
    paths = glob.glob(os.path.join(ROOT, "*.py"))
    for folder in ("sine", "tools", "demo", "inference_fss", "inference_fsod", "inference_vos",
                   "datasets"):
        paths += glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)
    scripts = set()
    for path in paths:
        with open(path) as f:
            if 'if __name__ == "__main__"' in f.read():
                scripts.add(os.path.relpath(path, ROOT))
    scripts.discard(os.path.join("sine", "utils", "cli.py"))  # its docstring shows the pattern
    listed = {e if e.endswith(".py") else e.replace(".", "/") + ".py" for e in ENTRY_POINTS}
    assert scripts == listed


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_help_answers_without_torch(entry, tmp_path):
    # From outside the repository, as a user runs them (scripts by their full path).
    target = os.path.join(ROOT, entry) if entry.endswith(".py") else entry
    out = _run(_RUN_HELP, target, cwd=tmp_path, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] in (0, None), out.stderr[-3000:]
    assert "usage:" in out.stdout and "--help" in out.stdout
    assert report["loaded"] == [], f"{entry} --help imported {report['loaded']}"


def test_import_sine_is_light_and_configs_register(tmp_path):
    code = f"""
import sys
import sine
assert not [m for m in {HEAVY!r} if m in sys.modules], "import sine loaded torch/detectron2"
from sine import InContextPredictor  # the public names still import (lazily)
assert InContextPredictor.__name__ == "InContextPredictor"
from sine.config import get_sine_cfg
cfg = get_sine_cfg({os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml")!r},
                   ["MODEL.DEVICE", "cpu"])
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
model = build_model(cfg)
assert type(model).__name__ == "SINE"
assert "coco_2017_train_ins" in DatasetCatalog.list()
print("ok")
"""
    out = _run(code, cwd=tmp_path, tmp_path=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_register_all_registers_for_direct_registry_users(tmp_path):
    code = """
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY
import sine
assert "SINE" not in META_ARCH_REGISTRY  # nothing before register_all()
sine.register_all()
assert {"SINE", "SegIC"} <= {name for name, _ in META_ARCH_REGISTRY}
assert "DINOv2Encoder" in BACKBONE_REGISTRY
assert "coco_2017_val_ins" in DatasetCatalog.list()
print("ok")
"""
    out = _run(code, cwd=tmp_path, tmp_path=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_train_net_takes_the_options_of_detectron2s_parser():
    # train_net.py builds its parser without detectron2; it must still accept every option of
    # detectron2's default_argument_parser, with the same defaults.
    from detectron2.engine import default_argument_parser

    import train_net

    def options(parser):
        return {a.dest: (tuple(a.option_strings), a.default) for a in parser._actions}

    ours, theirs = options(train_net.get_parser()), options(default_argument_parser())
    assert {k: ours.get(k) for k in theirs} == theirs


def test_benchmark_choices_match_the_registered_benchmarks():
    import inference_fsod
    import inference_fss
    from inference_fsod.register_fsod import BENCHMARKS as FSOD_BENCHMARKS
    from inference_fss.benchmarks import BENCHMARKS as FSS_BENCHMARKS

    assert set(inference_fss.BENCHMARK_NAMES) == set(FSS_BENCHMARKS)
    assert set(inference_fsod.BENCHMARK_NAMES) == set(FSOD_BENCHMARKS)
