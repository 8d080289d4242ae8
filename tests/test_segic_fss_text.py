"""The FSS suite gives SegIC the episode's class name as its text prompt (official), and runs
and reports the text-off conditions separately."""
import json

import pytest
import torch

pytest.importorskip("segment_anything", reason="SegIC needs the segic extra")
pytest.importorskip("transformers", reason="SegIC's text tower needs the segic extra")

from sine.data.synthetic import THING_CATEGORIES  # noqa: E402
from sine.modeling.meta_arch.segic_model import SegIC  # noqa: E402
from tests.segic_text import text_opts, write_tiny_clip_text  # noqa: E402
from tests.test_fss_suite import synthetic_root  # noqa: E402,F401  (fixture)
from tests.test_segic_predictor import BASE  # noqa: E402
from tests.tiny_model import TINY_SEGIC_OPTS  # noqa: E402


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_clip_text(str(tmp_path_factory.mktemp("clip")))


def run_suite(out, *opts):
    import inference_fss.eval as fss_eval

    torch.manual_seed(0)
    return fss_eval.main([
        "--config-file", BASE, "--benchmark", "synthetic", "--num-episodes", "3",
        "--output", str(out), *TINY_SEGIC_OPTS, "TEST.FSS.IMAGE_SIZE", "56",
        "TEST.FSS.SAMPLER", "balanced",
        "DATALOADER.NUM_WORKERS", "0", *opts])


def test_class_names_are_segic_prompts_by_default_and_off_as_an_option(
        synthetic_root, clip_dir, tmp_path, monkeypatch):  # noqa: F811
    prompts = []
    original = SegIC.encode_text

    def recording(self, texts):
        prompts.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(SegIC, "encode_text", recording)
    on = run_suite(tmp_path / "on", *text_opts(clip_dir))
    names = {c["name"] for c in THING_CATEGORIES}
    assert len(prompts) == 3
    assert all(p.startswith("a photo of a ") and p[len("a photo of a "):] in names
               for p in prompts)
    assert on["text_prompt"] == "class name"
    assert (tmp_path / "on" / "fss_synthetic_1shot.json").is_file()

    prompts.clear()
    off = run_suite(tmp_path / "off", *text_opts(clip_dir), "TEST.FSS.CLASS_NAMES", "False")
    assert prompts == ["please segment the instances"] * 3
    with open(tmp_path / "off" / "fss_synthetic_1shot_text-task-description.json") as f:
        assert json.load(f)["text_prompt"] == "task description"
    assert off["text_prompt"] == "task description"

    none = run_suite(tmp_path / "none")  # the tiny config has no text tower: no text slot
    assert none["text_prompt"] == "none"
    assert (tmp_path / "none" / "fss_synthetic_1shot_text-none.json").is_file()
