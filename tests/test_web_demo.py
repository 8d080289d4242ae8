"""demo/app.py end to end in headless Chromium (Playwright), on a tiny random SINE.

Needs /usr/bin/chromium and the Python packages gradio + playwright; when any is missing the test
runs tools/install_browser.sh once and skips only if that cannot install them.
"""
import importlib
import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from tests.tiny_model import TINY_MODEL_OPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TINY = list(TINY_MODEL_OPTS)
REF_HW, TARGET_HW = (120, 160), (150, 100)
OUTPUTS = ("id", "instances", "semantic")
ALL_OUTPUTS_SHOWN = """() => %s.every(k => {
    const img = document.querySelector('#out-' + k + ' img');
    return img !== null && img.complete && img.naturalWidth > 0; })""" % list(OUTPUTS)


def _missing_requirements():
    missing = [] if os.access(CHROMIUM, os.X_OK) else [CHROMIUM]
    for module in ("gradio", "playwright.sync_api"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


@pytest.fixture(scope="module")
def sync_playwright():
    """Playwright's entry point; installs the browser and packages once if they are missing."""
    missing = _missing_requirements()
    if missing:
        script = os.path.join(ROOT, "tools", "install_browser.sh")
        proc = subprocess.run(["bash", script], capture_output=True, text=True, timeout=900)
        importlib.invalidate_caches()
        still = _missing_requirements()
        if still:
            reason = (f"cannot install {still} with tools/install_browser.sh "
                      f"(exit {proc.returncode}): {(proc.stdout + proc.stderr)[-800:]}")
            print(reason)
            pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    return sync_playwright


def _shapes(h, w, boxes):
    image = np.full((h, w, 3), 235, np.uint8)
    for (y0, x0, y1, x1), colour in boxes:
        image[y0:y1, x0:x1] = colour
    return image


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("web_demo")
    red, blue = (220, 40, 30), (30, 70, 220)
    Image.fromarray(_shapes(*REF_HW, [((20, 20, 60, 70), red), ((70, 90, 110, 150), blue)])
                    ).save(d / "reference.png")
    label_map = np.zeros(REF_HW, np.uint8)  # two objects: values 120 and 240
    label_map[20:60, 20:70], label_map[70:110, 90:150] = 120, 240
    Image.fromarray(label_map).save(d / "mask.png")
    target = _shapes(*TARGET_HW, [((10, 10, 50, 60), red), ((90, 40, 140, 90), red),
                                  ((60, 60, 80, 95), blue)])
    Image.fromarray(target).save(d / "target.png")
    return d


@pytest.fixture(scope="module")
def predictor(sync_playwright):
    from sine.engine.predictor import SinePredictor

    return SinePredictor.from_config_file(
        os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml"), opts=TINY)


@pytest.fixture(scope="module")
def server(files, predictor):
    """The app on a free 127.0.0.1 port; records the masks every Run used as reference."""
    saved_env = {k: os.environ.get(k) for k in ("GRADIO_ANALYTICS_ENABLED", "GRADIO_TEMP_DIR")}
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(files / "uploads"))
    from demo.app import build_app

    used_masks = []
    set_reference = predictor.set_reference
    predictor.set_reference = lambda image, masks, *a, **kw: (
        used_masks.append(np.asarray(masks)) or set_reference(image, masks, *a, **kw))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(predictor)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", used_masks
    app.close()
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def browser_page(sync_playwright, server):
    """(page, external): a Chromium page, and the non-local URLs it tried (and was refused)."""
    external = []

    def local_only(route):  # everything must come from the local server: works offline
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.route("**/*", local_only)
        yield page, external
        browser.close()


def _open(page, url, files, with_mask):
    page.goto(url)
    page.wait_for_selector("#run", timeout=30_000)
    page.locator("#reference input[type=file]").set_input_files(str(files / "reference.png"))
    if with_mask:
        page.locator("#ref-mask input[type=file]").set_input_files(str(files / "mask.png"))
    page.locator("#target input[type=file]").set_input_files(str(files / "target.png"))
    page.wait_for_selector("#target img", timeout=30_000)
    # The editor places the uploaded image on its canvas asynchronously; until then its value
    # is the empty 800x800 default canvas. Its caption shows the value's size once it is there.
    _wait_for_reference_info(page, f"Reference image {REF_HW[1]}x{REF_HW[0]}:")


def _settled_box(page, selector):
    """The element's bounding box once the layout stopped moving (the editor zooms and places the
    uploaded image with an animation; a stroke drawn meanwhile can miss the image)."""
    page.wait_for_function(
        """s => new Promise(done => {
            const box = () => JSON.stringify(document.querySelector(s).getBoundingClientRect());
            const first = box();
            setTimeout(() => done(first === box()), 300);
        })""", arg=selector, timeout=30_000)
    return page.locator(selector).first.bounding_box()


def _wait_for_reference_info(page, text):
    page.wait_for_function(
        "t => document.querySelector('#reference-info').innerText.includes(t)", arg=text,
        timeout=30_000)


def _run_and_wait(page):
    page.click("#run")
    page.wait_for_function(ALL_OUTPUTS_SHOWN, timeout=90_000)
    page.wait_for_function(
        "() => document.querySelector('#status').innerText.includes('reference object')")


def test_upload_reference_mask_and_target_shows_three_results(browser_page, server, files,
                                                              tmp_path):
    (page, external), (url, used_masks) = browser_page, server
    _open(page, url, files, with_mask=True)
    page.wait_for_selector("#ref-mask img", timeout=30_000)
    _run_and_wait(page)
    for key in OUTPUTS:
        size = page.evaluate(f"() => {{ const i = document.querySelector('#out-{key} img'); "
                             "return [i.naturalHeight, i.naturalWidth]; }")
        assert tuple(size) == TARGET_HW, key  # each result drawn on the full-size target
    assert "2 reference object(s)" in page.inner_text("#status")
    # The label map's two values became two reference masks of the reference's size.
    assert used_masks[-1].shape == (2, *REF_HW)
    assert used_masks[-1][0, 40, 40] and used_masks[-1][1, 90, 120]
    assert not external, f"the page fetched non-local assets: {external}"
    page.screenshot(path=str(tmp_path / "web_demo.png"), full_page=True)
    if os.environ.get("SINE_WEB_DEMO_SCREENSHOT"):  # refresh docs/web_demo.png by hand
        shutil.copy(tmp_path / "web_demo.png", os.environ["SINE_WEB_DEMO_SCREENSHOT"])


def test_painting_on_the_reference_gives_the_mask(browser_page, server, files, tmp_path):
    (page, _), (url, used_masks) = browser_page, server
    _open(page, url, files, with_mask=False)
    page.get_by_role("button", name="Brush", exact=True).click()
    box = _settled_box(page, "#reference canvas")
    # The image is centred on the canvas: a short stroke through the centre paints its middle.
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 10, cy)
    page.mouse.down()
    for step in range(6):
        page.mouse.move(cx - 10 + 4 * step, cy, steps=2)
        time.sleep(0.05)
    page.mouse.up()
    # Run only once the editor's value holds the stroke (its caption is updated from it).
    _wait_for_reference_info(page, f"Reference image {REF_HW[1]}x{REF_HW[0]}: 1 painted object")
    _run_and_wait(page)
    assert "1 reference object(s)" in page.inner_text("#status")
    mask = used_masks[-1]
    assert mask.shape == (1, *REF_HW)
    h, w = REF_HW
    assert mask[0, h // 2, w // 2] and not mask[0, 0, 0] and not mask[0, -1, -1]
    page.screenshot(path=str(tmp_path / "web_demo_painted.png"), full_page=True)


def test_bad_reference_inputs_are_shown_as_errors(predictor):
    import gradio as gr

    from demo.app import reference_summary, segment

    image = np.full((*REF_HW, 4), 255, np.uint8)
    editor = {"background": image, "layers": [np.zeros_like(image)], "composite": image}
    target = np.zeros((*TARGET_HW, 3), np.uint8)
    mask = np.zeros(REF_HW, np.uint8)
    with pytest.raises(gr.Error, match="Paint the object"):
        segment(predictor, editor, None, target, 0.5)
    with pytest.raises(gr.Error, match="mask is empty"):
        segment(predictor, editor, mask, target, 0.5)
    with pytest.raises(gr.Error, match=r"mask has shape \(60, 80\), but its image is 160x120"):
        segment(predictor, editor, np.ones((60, 80), np.uint8), target, 0.5)
    with pytest.raises(gr.Error, match="lossless PNG"):  # e.g. a JPEG mask: noisy values
        segment(predictor, editor, np.arange(160 * 120).reshape(REF_HW) % 251, target, 0.5)
    with pytest.raises(gr.Error, match="Upload a target"):
        segment(predictor, editor, mask + 1, None, 0.5)
    with pytest.raises(gr.Error, match="Upload a reference image"):
        segment(predictor, None, mask + 1, target, 0.5)
    empty_canvas = np.zeros((800, 800, 4), np.uint8)  # the editor before an image is placed
    with pytest.raises(gr.Error, match="Upload a reference image"):
        segment(predictor, {"background": empty_canvas, "layers": []}, None, target, 0.5)
    assert reference_summary({"background": empty_canvas, "layers": []}) == \
        "No reference image yet."
    painted = np.zeros((*REF_HW, 4), np.uint8)
    painted[50:60, 70:90, 3] = 255
    assert reference_summary({"background": image, "layers": [painted]}) == \
        "Reference image 160x120: 1 painted object(s)."
