"""`import sine` exposes the public entry points; `sine.register_all()` (called by every sine
config) registers everything. tests/test_cli_help.py checks that `import sine` stays light."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_register_all_registers_config_backbone_and_meta_arch():
    from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY

    import sine

    sine.register_all()
    assert "SINE" in META_ARCH_REGISTRY
    assert "DINOv2Encoder" in BACKBONE_REGISTRY
    assert callable(sine.add_sine_config) and sine.SinePredictor and sine.VideoPredictor


def test_import_needs_no_compiled_ops_and_no_data(tmp_path):
    # A fresh interpreter, an empty dataset root: importing must neither fail nor read data.
    code = (
        "import sys, sine, detectron2; sine.register_all(); "
        "assert not any(m.startswith('detectron2._C') for m in sys.modules); print('ok')"
    )
    env = {"DETECTRON2_DATASETS": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": ROOT}  # this checkout
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
