#!/usr/bin/env python
"""Browser demo of SINE: paint (or upload) a reference mask, upload a target, click Run.

    python demo/app.py --config-file configs/demo/sine_synthetic_tiny.yaml \
        --opts MODEL.WEIGHTS output/demo/model_final.pth [--port 7860]

then open http://127.0.0.1:7860. Works offline (no CDN assets, analytics off).
"""
import argparse
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home, works offline

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Run as a script, this folder comes first on sys.path and `demo` would be demo/demo.py.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, ROOT)]

# gradio, torch and the model are imported when needed: `--help` answers at once.
from sine.utils.cli import (  # noqa: E402
    add_common_flags,
    add_config_file_flag,
    run_cli,
    split_config_overrides,
)

__all__ = ["build_app", "editor_reference", "mask_objects", "object_names",
           "reference_summary", "segment"]

logger = logging.getLogger("sine.demo.app")

OUTPUT_KEYS = ("id", "instances", "semantic")  # the three output images, left to right
VIS_MAX_SIDE = 1600  # results are drawn at most this size (the browser shows no more)

INTRO = """# SINE: in-context segmentation
1. Upload a **reference image** and paint the object on it (one layer per object), **or**
   upload a **mask** (same size as the reference; 0 = background, each other value = one object).
2. Optionally name the object class(es): one name for all objects, or one per object (shown
   as captions; SegIC's text prompt), and upload a **"not this" mask** of look-alikes on the
   reference to exclude.
3. Upload a **target** image and click **Run**: the identical object(s), every instance of the
   same class and the semantic region are shown.
"""


def _error(message: str):
    import gradio as gr

    return gr.Error(message)


def mask_objects(mask, image_shape, mask_threshold: Optional[float] = None):
    """An uploaded mask -> (N, H, W) bool, one object per distinct non-zero value (the shared
    rules of ``sine.data.user_inputs.read_masks``)."""
    from sine.data.user_inputs import read_masks

    return read_masks(mask, image_shape, "the reference mask", mask_threshold)


def editor_reference(editor: Optional[dict]) -> Tuple[object, list]:
    """ImageEditor value -> reference image (H, W, 3) uint8 and the painted layers' masks."""
    from sine.data.user_inputs import read_image

    background = None if editor is None else editor.get("background")
    # A fully transparent background is the editor's empty canvas: nothing was uploaded (yet).
    if background is None or (getattr(background, "ndim", 0) == 3 and background.shape[-1] == 4
                              and not background[..., 3].any()):
        raise _error("Upload a reference image first.")
    image = read_image(background, "the reference image")
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
    except Exception:  # gr.Error or UserInputError: nothing usable yet
        return "No reference image yet."
    return (f"Reference image {image.shape[1]}x{image.shape[0]}: "
            f"{len(painted)} painted object(s).")


def object_names(text: Optional[str], count: int) -> Tuple[List[int], Dict[int, str]]:
    """The class field ("cat" or "cat, dog") -> class id per object and {class id: name}."""
    from sine.data.user_inputs import UserInputError

    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    if not names:
        return [0] * count, {}
    if len(names) == 1:
        names = names * count
    if len(names) != count:
        raise UserInputError(f"the class field names {len(names)} classes for {count} reference "
                             "objects: give one name for all, or one per object, "
                             "comma-separated")
    order = list(dict.fromkeys(names))
    classes = [order.index(n) for n in names]
    return classes, {c: n for c, n in zip(classes, names)}


def _segment(predictor, editor, mask, target, score_thresh, names, mask_threshold,
             negative_mask):
    import numpy as np

    from demo.visualize import draw_panels
    from sine.data.user_inputs import read_image, read_masks

    image, painted = editor_reference(editor)
    if mask is not None:  # an uploaded mask takes precedence over painting
        masks = mask_objects(mask, image.shape, mask_threshold)
    elif painted:
        masks = np.stack(painted)
    else:
        raise _error("Paint the object on the reference image or upload a mask.")
    if target is None:
        raise _error("Upload a target image.")
    target = read_image(target, "the target image")
    classes, name_of = object_names(names, len(masks))
    negatives = None
    if negative_mask is not None:  # look-alikes marked "not this" on the reference image
        negatives = read_masks(negative_mask, image.shape, "the 'not this' mask", mask_threshold)
    predictor.set_reference(image, masks, classes,
                            names=[name_of[c] for c in classes] if name_of else None,
                            negatives=negatives)
    result = predictor.predict(target)
    sem_thresh = predictor.cfg.MODEL.SINE.TEST.SEM_SEG_THRESH
    panels = draw_panels(target, result, sem_thresh, score_thresh, name_of, VIS_MAX_SIDE,
                         min_side=0)  # the browser scales small images itself
    images = [panels[k].image if k in panels else None for k in OUTPUT_KEYS]
    captions = "  \n".join(p.caption for p in panels.values())
    listed = ", ".join(f"#{k} {name_of.get(c, f'class {c}')}" for k, c in enumerate(classes))
    return (*images, f"{len(masks)} reference object(s): {listed}.  \n{captions}")


def segment(predictor, editor, mask, target, score_thresh: float, names: str = "",
            mask_threshold: Optional[float] = None, negative_mask=None):
    """The Run button: (ID, instances, semantic) overlays and captions; every problem with the
    inputs is shown in the page as a message (``gr.Error``), never as a traceback."""
    import gradio as gr

    from sine.data.user_inputs import UserInputError

    try:
        return _segment(predictor, editor, mask, target, score_thresh, names,
                        mask_threshold or None, negative_mask)
    except gr.Error:
        raise
    except UserInputError as e:
        raise gr.Error(str(e)) from e
    except Exception as e:  # a bug: tell the user, keep the traceback for the server log
        logger.exception("Run failed")
        raise gr.Error(f"Internal error ({type(e).__name__}: {e}); see the server log.") from e


def build_app(predictor, score_thresh: float = 0.5):
    """The demo page (``gr.Blocks``); every element the browser test drives has an ``elem_id``."""
    import gradio as gr

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
            target = gr.Image(label="Target image", type="numpy", image_mode="RGB",
                              format="png", sources=["upload", "clipboard"], elem_id="target")
        ref_info = gr.Markdown("No reference image yet.", elem_id="reference-info")
        for event in (editor.upload, editor.change):
            event(reference_summary, editor, ref_info, show_progress="hidden")
        with gr.Row():
            # Below the editor's row, which keeps the editor's canvas as wide as before.
            negative = gr.Image(label="optional: mask of look-alikes to exclude ('not this')",
                                type="numpy", image_mode="L", format="png", height=160,
                                sources=["upload", "clipboard"], elem_id="neg-mask")
            names = gr.Textbox(label="Class name(s): one for all objects, or one per object "
                                     "(comma-separated)", elem_id="class-names")
            thresh = gr.Slider(0.0, 1.0, value=score_thresh, step=0.05,
                               label="Instance score threshold", elem_id="threshold")
            mask_thresh = gr.Number(value=None, label="Mask threshold for soft / JPEG masks "
                                    "(0-1, empty: refuse them)", elem_id="mask-threshold")
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
        run.click(lambda *a: segment(predictor, *a), [editor, mask, target, thresh, names,
                                                      mask_thresh, negative],
                  [*outputs, status])
    return app


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="SINE web demo (Gradio).",
                                     epilog="Config overrides go last: ... MODEL.WEIGHTS x.pth")
    add_config_file_flag(parser)
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: MODEL.DEVICE)")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve the network")
    parser.add_argument("--port", type=int, default=7860)
    return add_common_flags(parser)


def main(argv: Optional[List[str]] = None):
    head, opts = split_config_overrides(list(sys.argv[1:] if argv is None else argv))
    args = get_parser().parse_args(head)
    from sine.engine.predictor import InContextPredictor

    predictor = InContextPredictor.from_config_file(
        args.config_file, opts=[*args.opts_deprecated, *args.opts, *opts], device=args.device)
    build_app(predictor).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_cli(main))
