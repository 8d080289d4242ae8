"""demo/app.py in headless Chromium with a tiny random SegIC (and a tiny CLIP text tower): the
user names each object's class, SegIC reads the names as its text prompts and the captions show
them. Uses the browser fixtures of tests/test_web_demo.py with a SegIC predictor."""
import os

import pytest

pytest.importorskip("segment_anything", reason="SegIC needs the segic extra")
pytest.importorskip("transformers", reason="SegIC's text tower needs the segic extra")

from tests.segic_text import text_opts, write_tiny_clip_text  # noqa: E402
from tests.test_web_demo import (  # noqa: E402,F401  (fixtures)
    TARGET_HW,
    _open,
    browser_page,
    files,
    server,
    sync_playwright,
)
from tests.tiny_model import TINY_SEGIC_OPTS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEGIC_OUTPUTS_SHOWN = """() => ['id', 'semantic'].every(k => {
    const img = document.querySelector('#out-' + k + ' img');
    return img !== null && img.complete && img.naturalWidth > 0; })"""


@pytest.fixture(scope="module")
def predictor(sync_playwright, tmp_path_factory):  # noqa: F811  (overrides test_web_demo's)
    import torch

    from sine.engine.predictor import InContextPredictor

    clip = write_tiny_clip_text(str(tmp_path_factory.mktemp("clip")))
    torch.manual_seed(0)
    return InContextPredictor.from_config_file(
        os.path.join(ROOT, "configs/segic/Base-SegIC.yaml"),
        opts=[*TINY_SEGIC_OPTS, *text_opts(clip)])


def test_segic_app_with_class_names(browser_page, server, files, predictor):  # noqa: F811
    (page, external), (url, used_masks) = browser_page, server
    _open(page, url, files, with_mask=True)
    page.wait_for_selector("#ref-mask img", timeout=30_000)
    page.locator("#class-names textarea").fill("red box, blue box")
    page.click("#run")
    page.wait_for_function(SEGIC_OUTPUTS_SHOWN, timeout=90_000)
    page.wait_for_function(
        "() => document.querySelector('#status').innerText.includes('reference object')")
    assert "2 reference object(s)" in page.inner_text("#status")
    assert predictor.references.names == ["red box", "blue box"]
    assert predictor.model.prompts_of(predictor.references.names, 2) == [
        "a photo of a red box", "a photo of a blue box"]
    for key in ("id", "semantic"):
        size = page.evaluate(f"() => {{ const i = document.querySelector('#out-{key} img'); "
                             "return [i.naturalHeight, i.naturalWidth]; }")
        assert tuple(size) == TARGET_HW, key
    assert used_masks[-1].shape[0] == 2
    assert not external, f"the page fetched non-local assets: {external}"
