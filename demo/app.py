#!/usr/bin/env python
"""Browser demo of SINE (or SegIC): paint (or upload) a reference mask, name its class, upload a
target, click Run.

    python demo/app.py --config-file configs/demo/sine_synthetic_tiny.yaml \
        --opts MODEL.WEIGHTS output/demo/model_final.pth [--port 7860]

then open http://127.0.0.1:7860. Works offline (no CDN assets, analytics off). Any in-context
model's config runs unchanged (``--config-file configs/segic/Base-SegIC.yaml``: SegIC shows the ID
and semantic results and reads the class names as its text prompt).
"""
import argparse
import os
import sys
from typing import List, Optional, Tuple

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home, works offline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# First, even if PYTHONPATH holds it too: a script's own folder (demo/) leads sys.path, and there
# `demo` would be this file instead of the package.
if sys.path[0] != ROOT:
    sys.path.insert(0, ROOT)

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from demo.visualize import draw_panels, reference_class_names  # noqa: E402
from sine.engine.predictor import InContextPredictor  # noqa: E402

__all__ = ["build_app", "class_names_of", "editor_reference", "mask_objects",
           "reference_summary", "segment"]

OUTPUT_KEYS = ("id", "instances", "semantic")  # the three output images, left to right
MAX_MASK_VALUES = 32  # more distinct values than this means a lossy / anti-aliased mask

INTRO = """# SINE: in-context segmentation
1. Upload a **reference image** and paint the object on it (one layer per object), **or**
   upload a **mask** (same size as the reference; 0 = background, each other value = one object).
2. Optionally upload a **"not this" mask** of look-alikes on the reference to exclude, and name
   each object's class (comma-separated, in object order: layers as painted,
   or mask values ascending): shown as captions, and used by SegIC as its text prompt.
3. Upload a **target** image and click **Run**: the identical object(s), every instance of the
   same class and the semantic region are shown (each as the model gives them).
"""


def mask_objects(mask: np.ndarray) -> np.ndarray:
    """(H, W) label map -> (N, H, W) bool, one object per distinct non-zero value."""
    values = np.unique(mask)
    values = values[values != 0]
    if len(values) == 0:
        raise gr.Error("The reference mask is empty: it has no pixel > 0.")
    if len(values) > MAX_MASK_VALUES:
        raise gr.Error(
            f"The reference mask has {len(values)} distinct values: upload a lossless PNG with "
            "0 for background and one value per object (not a JPEG)."
        )
    return np.stack([mask == v for v in values])


def editor_reference(editor: Optional[dict]) -> Tuple[np.ndarray, List[np.ndarray]]:
    """ImageEditor value -> reference image (H, W, 3) uint8 and the painted layers' masks."""
    background = None if editor is None else editor.get("background")
    # A fully transparent background is the editor's empty canvas: nothing was uploaded (yet).
    if background is None or (background.shape[-1] == 4 and not background[..., 3].any()):
        raise gr.Error("Upload a reference image first.")
    image = np.ascontiguousarray(background[..., :3])
    painted = []
    for layer in editor.get("layers") or []:
        alpha = layer[..., 3] if layer.shape[-1] == 4 else layer.max(axis=-1)
        if (alpha > 0).any() and alpha.shape == image.shape[:2]:
            painted.append(alpha > 0)
    return image, painted


def reference_summary(editor: Optional[dict]) -> str:
    """What Run will use from the editor: the reference image's size and its painted objects.

    Shown under the editor; it changes only once the editor has placed the uploaded image on its
    canvas (before that the canvas has its default 800x800 size, and so would a Run's reference).
    """
    try:
        image, painted = editor_reference(editor)
    except gr.Error:
        return "No reference image yet."
    return (f"Reference image {image.shape[1]}x{image.shape[0]}: "
            f"{len(painted)} painted object(s).")


def class_names_of(text: Optional[str], num_objects: int) -> Optional[List[str]]:
    """"cat, dog" -> one class name per object (None when the box is empty)."""
    if not text or not text.strip():
        return None
    names = [n.strip() for n in text.split(",")]
    if len(names) != num_objects or not all(names):
        raise gr.Error(f"Give one class name per object, comma-separated: {num_objects} "
                       f"object(s), but the names are {names}.")
    return names


def segment(predictor: InContextPredictor, editor, mask, target, score_thresh: float,
            class_names: Optional[str] = None, negative_mask=None):
    """The Run button: (ID, instances, semantic) overlays at the target size and captions."""
    image, painted = editor_reference(editor)
    if mask is not None:  # an uploaded mask takes precedence over painting
        mask = mask if mask.ndim == 2 else mask.max(axis=-1)
        if mask.shape != image.shape[:2]:
            raise gr.Error(
                f"The mask is {mask.shape[1]}x{mask.shape[0]} but the reference image is "
                f"{image.shape[1]}x{image.shape[0]}: they must have the same size."
            )
        masks = mask_objects(mask)
    elif painted:
        masks = np.stack(painted)
    else:
        raise gr.Error("Paint the object on the reference image or upload a mask.")
    if target is None:
        raise gr.Error("Upload a target image.")
    names = class_names_of(class_names, len(masks))
    negatives = None
    if negative_mask is not None:  # look-alikes marked "not this" on the reference image
        negative_mask = negative_mask if negative_mask.ndim == 2 else negative_mask.max(axis=-1)
        if negative_mask.shape != image.shape[:2]:
            raise gr.Error(
                f"The 'not this' mask is {negative_mask.shape[1]}x{negative_mask.shape[0]} but "
                f"the reference image is {image.shape[1]}x{image.shape[0]}.")
        negatives = mask_objects(negative_mask)
    # Objects of the same name are one class (instances / semantic results); unnamed objects
    # are class 0, as before.
    order = list(dict.fromkeys(names or []))
    labels = [order.index(n) for n in names] if names else None
    tokens = predictor.set_reference(image, masks, labels, names=names, negatives=negatives)
    result = predictor.predict(np.ascontiguousarray(target[..., :3]))
    sem_thresh = predictor.cfg.MODEL.SINE.TEST.SEM_SEG_THRESH
    panels = draw_panels(target[..., :3], result, sem_thresh, score_thresh,
                         reference_class_names(tokens))
    images = [panels[k].image if k in panels else None for k in OUTPUT_KEYS]
    captions = "  \n".join(p.caption for p in panels.values())
    return (*images, f"{len(masks)} reference object(s).  \n{captions}")


def build_app(predictor: InContextPredictor, score_thresh: float = 0.5) -> gr.Blocks:
    """The demo page; every element the browser test drives has an ``elem_id``."""
    with gr.Blocks(title="SINE in-context segmentation") as app:
        gr.Markdown(INTRO)
        with gr.Row():
            editor = gr.ImageEditor(
                label="Reference image: paint the object(s)", type="numpy", format="png",
                brush=gr.Brush(colors=["#ff3b30"], color_mode="defaults"),
                sources=["upload", "clipboard"], elem_id="reference",
            )
            mask = gr.Image(label="or upload its mask", type="numpy", image_mode="L",
                            format="png", sources=["upload", "clipboard"], elem_id="ref-mask")
            negative = gr.Image(label="optional: mask of look-alikes to exclude ('not this')",
                                type="numpy", image_mode="L", format="png",
                                sources=["upload", "clipboard"], elem_id="neg-mask")
            target = gr.Image(label="Target image", type="numpy", image_mode="RGB",
                              format="png", sources=["upload", "clipboard"], elem_id="target")
        ref_info = gr.Markdown("No reference image yet.", elem_id="reference-info")
        for event in (editor.upload, editor.change):
            event(reference_summary, editor, ref_info, show_progress="hidden")
        names = gr.Textbox(label="Class name of each object (comma-separated, optional)",
                           placeholder="e.g. cat, dog", elem_id="class-names")
        thresh = gr.Slider(0.0, 1.0, value=score_thresh, step=0.05,
                           label="Instance score threshold", elem_id="threshold")
        run = gr.Button("Run", variant="primary", elem_id="run")
        with gr.Row():
            outputs = [
                gr.Image(label=name, type="numpy", format="png", interactive=False,
                         elem_id=f"out-{key}")
                for key, name in zip(OUTPUT_KEYS, ["ID: the identical object(s)",
                                                   "Instances of the same class",
                                                   "Semantic region"])
            ]
        status = gr.Markdown(elem_id="status")
        run.click(lambda *a: segment(predictor, *a),
                  [editor, mask, target, thresh, names, negative], [*outputs, status])
    return app


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description="SINE web demo (Gradio).")
    parser.add_argument("--config-file",
                        default=os.path.join(ROOT, "configs/demo/sine_synthetic_tiny.yaml"))
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: MODEL.DEVICE")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve the network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS x.pth")
    args = parser.parse_args(argv)
    predictor = InContextPredictor.from_config_file(args.config_file, opts=args.opts,
                                                    device=args.device)
    build_app(predictor).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":  # pragma: no cover
    main()
