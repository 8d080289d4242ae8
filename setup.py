"""sine: in-context segmentation (SINE) as a detectron2 extension.

No torch import at module scope: the package must build under pip's build isolation.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_requirements(name):
    lines = (ROOT / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


# ONNX export (dynamo exporter: onnxscript) and its CPU runtime.
ONNX = ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"]

setup(
    name="sine",
    version="0.1.0",
    description="SINE in-context segmentation (ID, instance and semantic) on detectron2",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sine", "sine.*", "inference_fss", "inference_fsod",
                                    "inference_vos"]),
    install_requires=read_requirements("requirements.txt"),
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout>=2.1", "ruff>=0.4",
                # tests/test_web_demo.py (Chromium itself: tools/install_browser.sh)
                "gradio>=6.0,<7", "playwright>=1.40",
                *ONNX,  # tests/test_onnx_export.py
                "peft>=0.10"],  # tests/test_transfer.py, tests/test_lora.py
        "demo": ["gradio>=6.0,<7"],  # demo/app.py
        # The SegIC model: SAM's prompt encoder / two-way decoder, the CLIP text tower
        # (transformers 5: the 4.x line pins huggingface-hub < 1, which gradio 6 cannot use) and
        # the CLIP BPE file shipped in open-clip-torch (the offline tokenizer).
        "segic": ["segment-anything>=1.0", "transformers>=5.0", "open-clip-torch>=2.20"],
        "onnx": ONNX,  # tools/export_onnx.py, sine/export/onnx.py
        "transfer": ["peft>=0.10"],  # LoRA transfer (sine/modeling/lora.py)
    },
    # detectron2 is installed by tools/install_detectron2.py (no compiled ops needed).
)
