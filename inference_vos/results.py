"""VOS result files: palette PNGs per video, written atomically, with resumable done markers.

Layout (official): DAVIS ``<output>/<video>/<frame>.png``; YouTube-VOS
``<output>/Annotations/<video>/<frame>.png`` plus ``<output>/submission.zip`` for the server.
A video's PNGs are written to ``<output>/.partial/<video>`` and moved into place when the video
is complete; then ``<output>/.done/<video>.json`` marks it finished (a record of
``sine.evaluation.resume``, tied to the run's settings), so an interrupted run redoes only
unfinished videos, and a run with other settings in the same folder stops with an error.
"""
import os
import shutil
import zipfile
from contextlib import contextmanager
from typing import Dict, Optional

import numpy as np
from PIL import Image

from sine.evaluation.resume import RunRecords
from sine.utils.io import atomic_write

__all__ = ["VOSResultWriter", "VideoOutput"]


class VideoOutput:
    """Result frames of one video being written (see :meth:`VOSResultWriter.video`)."""

    def __init__(self, folder: str, palette):
        self.folder = folder
        self.palette = palette
        self.info = {}

    def write(self, frame_name: str, labels: np.ndarray) -> None:
        """Save an (H, W) label map (object ids < 256) as ``<frame_name>.png``."""
        if labels.max(initial=0) > 255:
            raise ValueError(f"{frame_name}: object ids above 255 do not fit a palette PNG")
        png = Image.fromarray(labels.astype(np.uint8))  # "L", then "P" with the palette
        png.putpalette(self.palette)
        png.save(os.path.join(self.folder, f"{frame_name}.png"))


class VOSResultWriter:
    """Result folders of a VOS run: official layout, atomic per video, resumable."""

    def __init__(self, output_dir: str, youtube: bool = False, settings: Optional[Dict] = None):
        """
        Args:
            output_dir: run folder.
            youtube: YouTube-VOS layout (results under ``Annotations/``, submission zip).
            settings: what the results depend on (model, dataset); a video finished with other
                settings is an error instead of being skipped.
        """
        self.records = RunRecords(settings or {}, on_mismatch="error")
        self.output_dir = output_dir
        self.youtube = youtube
        self.results_dir = os.path.join(output_dir, "Annotations") if youtube else output_dir
        self._partial_dir = os.path.join(output_dir, ".partial")
        self._done_dir = os.path.join(output_dir, ".done")

    def _marker(self, video: str) -> str:
        return os.path.join(self._done_dir, f"{video}.json")

    def is_done(self, video: str) -> bool:
        """The video's results were completed by an earlier (or this) run."""
        return os.path.isdir(os.path.join(self.results_dir, video)) and \
            self.records.load(self._marker(video)) is not None

    @contextmanager
    def video(self, name: str, palette):
        """Collect one video's frames; they reach the results only if the block succeeds.

        Yields a :class:`VideoOutput`; its ``info`` dict is stored in the done marker.
        """
        tmp = os.path.join(self._partial_dir, name)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        out = VideoOutput(tmp, palette)
        yield out
        final = os.path.join(self.results_dir, name)
        os.makedirs(self.results_dir, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)  # left by a run stopped before its marker
        os.replace(tmp, final)
        self.records.save(self._marker(name), out.info)

    def submission_zip(self) -> str:
        """Zip ``Annotations/`` as the YouTube-VOS server expects; returns the zip path."""
        path = os.path.join(self.output_dir, "submission.zip")
        with atomic_write(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for video in sorted(os.listdir(self.results_dir)):
                folder = os.path.join(self.results_dir, video)
                for frame in sorted(os.listdir(folder)):
                    z.write(os.path.join(folder, frame), f"Annotations/{video}/{frame}")
        return path
