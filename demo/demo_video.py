#!/usr/bin/env python
"""Track objects through a video from their masks on the first frame, and draw them.

    python demo/demo_video.py --input video.mp4 --mask first_frame.png --output tracked.mp4 \\
        MODEL.WEIGHTS output/demo/model_final.pth

``--input``: a video file or a folder of frames; ``--mask``: the first frame's masks as a
label map (a palette PNG as DAVIS annotations, or grey values: value k = object k; 255 is
"void") or a binary PNG (one object); ``--output``: a video file (.mp4 .avi .mov .mkv), an
animated ``.gif``, or a folder (no extension) that receives one overlay PNG per frame.
Video and GIF outputs keep the first frame's size: a frame of another size is resized to it
(with a warning), never dropped. Outputs are written to a temporary file and renamed when
complete. The default model is the CPU demo model, as for demo/demo.py and demo/app.py;
config overrides are ``KEY VALUE`` pairs at the end (``--opts`` still works, deprecated).
"""
import argparse
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Run as a script, this folder comes first on sys.path and `demo` would be demo/demo.py.
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") not in (HERE, ROOT)]

# Only light modules at import time: `--help` must not wait for torch / detectron2.
from sine.utils.cli import (  # noqa: E402
    add_common_flags,
    add_config_file_flag,
    run_cli,
    split_config_overrides,
)

logger = logging.getLogger("sine.demo_video")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
GIF_MAX_SIDE = 640  # GIF frames are kept in memory until the end: drawn at most this size


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="SINE video object segmentation demo",
        epilog="Config overrides go last: ... --output out.mp4 MODEL.WEIGHTS model.pth")
    add_config_file_flag(parser, "(configs/vos/davis17.yaml for the released SINE)")
    parser.add_argument("--input", required=True, help="video file or folder of frames")
    parser.add_argument("--mask", required=True,
                        help="first-frame mask PNG: label map (palette or grey, value k = object "
                             "k) or binary (one object)")
    parser.add_argument("--mask-threshold", type=float, metavar="T",
                        help="binarise a soft (JPEG / anti-aliased) mask at this fraction of its "
                             "range (default: refuse it)")
    parser.add_argument("--output", required=True,
                        help=f"overlay video ({' '.join(VIDEO_EXTENSIONS)}), .gif, or a folder "
                             "for PNGs")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: config)")
    parser.add_argument("--fps", type=float, default=None,
                        help="output frame rate (default: the input video's, else 24)")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity")
    return add_common_flags(parser)


def parse_args(argv=None):
    head, opts = split_config_overrides(list(sys.argv[1:] if argv is None else argv))
    args = get_parser().parse_args(head)
    args.opts = [*args.opts_deprecated, *args.opts, *opts]
    return args


def overlay(frame, labels, palette, alpha):
    """(H, W, 3) RGB frame with each object's mask tinted in its palette colour."""
    import numpy as np

    colours = np.asarray(palette[:768], np.float32).reshape(256, 3)
    out = frame.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[labels[fg]]
    return out.round().clip(0, 255).astype(np.uint8)


def output_kind(output: str) -> str:
    """"video", "gif" or "folder" from the --output name; anything else is an error."""
    from sine.data.user_inputs import UserInputError

    ext = os.path.splitext(output)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext == ".gif":
        return "gif"
    if ext and not os.path.isdir(output):
        raise UserInputError(f"--output {output!r}: unknown extension {ext!r}; give a video "
                             f"({', '.join(VIDEO_EXTENSIONS)}), a .gif or a folder name")
    return "folder"


class FrameSink:
    """Writes overlay frames to a video file, a GIF, or PNGs in a folder, atomically."""

    def __init__(self, output, fps):
        self.output, self.fps = output, fps
        self.kind = output_kind(output)
        self.writer, self.gif_frames, self.resized = None, [], []
        self.first = self.size = None  # first frame's size; the output's size
        folder = output if self.kind == "folder" else os.path.dirname(os.path.abspath(output))
        os.makedirs(folder, exist_ok=True)
        ext = os.path.splitext(output)[1]
        self.tmp = None if self.kind == "folder" else os.path.join(
            folder, f".tmp-{os.getpid()}-{os.path.basename(output)}{ext}")

    def _fit(self, name, rgb):
        """Frames of a video must all have the first frame's size: resize, never drop."""
        import cv2

        h, w = rgb.shape[:2]
        if self.first is None:
            self.first = (h, w)
            if self.size is None:
                self.size = (h, w)
        elif (h, w) != self.first:
            if not self.resized:
                logger.warning("frame %s is %dx%d but the video is %dx%d: resized to fit "
                               "(use a folder --output to keep every frame's size)",
                               name, w, h, self.first[1], self.first[0])
            self.resized.append(name)
        if (h, w) != self.size:
            rgb = cv2.resize(rgb, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        return rgb

    def write(self, name, rgb):
        import cv2
        import numpy as np

        from sine.data.user_inputs import UserInputError
        from sine.utils.io import atomic_write

        if self.kind == "folder":
            ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
            with atomic_write(os.path.join(self.output, f"{name}.png"), "wb") as f:
                f.write(png.tobytes())
            return
        if self.kind == "gif":
            from demo.visualize import fit_size

            if self.size is None:
                self.size = fit_size(*rgb.shape[:2], GIF_MAX_SIDE, min_side=0)
            self.gif_frames.append(self._fit(name, rgb))
            return
        rgb = self._fit(name, rgb)
        if self.writer is None:
            h, w = rgb.shape[:2]
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.fps, (w, h))
            if not self.writer.isOpened():
                raise UserInputError(f"OpenCV cannot write {self.output!r}; give a .gif or a "
                                     "folder as --output")
        self.writer.write(np.ascontiguousarray(rgb[..., ::-1]))

    def close(self, success: bool):
        """Finish the file (renamed into place only on success)."""
        if self.writer is not None:
            self.writer.release()
        if success and self.kind == "gif" and self.gif_frames:
            from PIL import Image

            frames = [Image.fromarray(f) for f in self.gif_frames]
            frames[0].save(self.tmp, format="GIF", save_all=True, append_images=frames[1:],
                           duration=round(1000 / self.fps), loop=0)
        if self.tmp and os.path.exists(self.tmp):
            if success:
                os.replace(self.tmp, self.output)
            else:
                os.unlink(self.tmp)


def input_info(source):
    """(number of frames or None, frame rate or None) of a video file or frame folder."""
    import cv2

    from sine.data.user_inputs import IMAGE_EXTENSIONS

    if os.path.isdir(source):
        return sum(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(source)), None
    capture = cv2.VideoCapture(source)
    count, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return (int(count) or None), (fps or None)


def main(argv=None):
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger
    from tqdm import tqdm

    from sine.data.synthetic.videos import davis_palette
    from sine.data.user_inputs import UserInputError, masks_by_object_id
    from sine.engine.video_predictor import VideoPredictor, open_video

    setup_logger(name="sine")
    if not os.path.exists(args.input):
        raise UserInputError(f"--input {args.input!r} does not exist (a video file or a folder "
                             "of frames)")
    output_kind(args.output)
    _, first = next(open_video(args.input))  # fails clearly on an empty folder / bad video
    masks = masks_by_object_id(args.mask, first.shape, f"--mask {args.mask!r}",
                               args.mask_threshold)
    count, fps = input_info(args.input)
    vp = VideoPredictor.from_config_file(args.config_file, opts=args.opts, device=args.device)
    sink = FrameSink(args.output, args.fps or fps or 24.0)
    palette = davis_palette()
    written, ok = 0, False
    try:
        results = vp.segment_video(args.input, masks)
        for name, frame, result in tqdm(results, total=count, desc="frames"):
            sink.write(name, overlay(frame, result.labels, palette, args.alpha))
            written += 1
        ok = True
    finally:
        sink.close(ok)
    note = f", {len(sink.resized)} resized to the first frame's size" if sink.resized else ""
    print(f"wrote {args.output}: {written} frame(s), {len(masks)} object(s){note}",
          file=sys.stderr)
    return args.output


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_cli(main))
