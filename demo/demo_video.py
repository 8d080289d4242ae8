#!/usr/bin/env python
"""Track objects through a video from their masks on the first frame, and draw them.

    python demo/demo_video.py --config-file configs/vos/davis17.yaml --input video.mp4 \\
        --mask first_frame.png --output tracked.mp4 --opts MODEL.WEIGHTS models/pytorch_model.bin

``--input``: a video file or a folder of frames; ``--mask``: the first frame's masks as a
palette PNG (index k = object k, as DAVIS annotations) or a binary PNG (one object);
``--output``: an ``.mp4`` file, or a folder that receives one overlay PNG per frame.
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sine.data.synthetic.videos import davis_palette  # noqa: E402
from sine.engine.video_predictor import IMAGE_EXTENSIONS, VOID_LABEL, VideoPredictor  # noqa: E402

logger = logging.getLogger("demo_video")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="SINE video object segmentation demo")
    parser.add_argument("--config-file", default=os.path.join(ROOT, "configs/vos/davis17.yaml"))
    parser.add_argument("--input", required=True, help="video file or folder of frames")
    parser.add_argument("--mask", required=True, help="first-frame mask PNG (palette or binary)")
    parser.add_argument("--output", required=True, help="overlay .mp4, or a folder for PNGs")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: config)")
    parser.add_argument("--fps", type=float, default=None,
                        help="output frame rate (default: the input video's, else 24)")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides KEY VALUE ..., e.g. MODEL.WEIGHTS model.pth")
    return parser.parse_args(argv)


def read_first_masks(path):
    """First-frame masks: a palette PNG gives ``{index: mask}``, any other PNG one object."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the mask {path!r}: {e}") from e
    if img.mode == "P":
        labels = np.array(img)
        ids = [int(v) for v in np.unique(labels) if v not in (0, VOID_LABEL)]
        masks = {i: labels == i for i in ids}
    else:
        masks = {1: np.array(img.convert("L")) > 0}
    if not any(m.any() for m in masks.values()):
        raise ValueError(f"the mask {path!r} is empty: draw at least one object")
    return masks


def overlay(frame, labels, palette, alpha):
    """(H, W, 3) RGB frame with each object's mask tinted in its palette colour."""
    colours = np.asarray(palette[:768], np.float32).reshape(256, 3)
    out = frame.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[labels[fg]]
    return out.round().clip(0, 255).astype(np.uint8)


class FrameSink:
    """Writes overlay frames to an mp4 file or as PNGs into a folder."""

    def __init__(self, output, fps):
        self.output, self.fps = output, fps
        self.is_video = output.lower().endswith((".mp4", ".avi", ".mov", ".mkv"))
        self.writer = None
        if not self.is_video:
            os.makedirs(output, exist_ok=True)
        elif os.path.dirname(output):
            os.makedirs(os.path.dirname(output), exist_ok=True)

    def write(self, name, rgb):
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if not self.is_video:
            cv2.imwrite(os.path.join(self.output, f"{name}.png"), bgr)
            return
        if self.writer is None:
            h, w = rgb.shape[:2]
            self.writer = cv2.VideoWriter(self.output, cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                raise ValueError(f"OpenCV cannot write {self.output!r}; try a folder output")
        self.writer.write(bgr)

    def close(self):
        if self.writer is not None:
            self.writer.release()


def input_info(source):
    """(number of frames or None, frame rate or None) of a video file or frame folder."""
    if os.path.isdir(source):
        return sum(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(source)), None
    capture = cv2.VideoCapture(source)
    count, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return (int(count) or None), (fps or None)


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="sine")
    setup_logger(name="demo_video")
    masks = read_first_masks(args.mask)
    if not os.path.exists(args.input):
        raise ValueError(f"--input {args.input!r} does not exist (a video file or frame folder)")
    count, fps = input_info(args.input)
    vp = VideoPredictor.from_config_file(args.config_file, opts=args.opts, device=args.device)
    sink = FrameSink(args.output, args.fps or fps or 24.0)
    palette = davis_palette()
    try:
        frames = vp.segment_video(args.input, masks)
        for name, frame, result in tqdm(frames, total=count, desc="frames"):
            sink.write(name, overlay(frame, result.labels, palette, args.alpha))
    finally:
        sink.close()
    logger.info("wrote %s (%d object(s))", args.output, len(masks))
    return args.output


if __name__ == "__main__":
    main()
