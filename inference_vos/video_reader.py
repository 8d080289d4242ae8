"""Readers of the VOS benchmarks: DAVIS 2016/2017 and YouTube-VOS 2018 (spec §7.3).

Expected trees: datasets/README.md#davis and #youtube-vos. A reader lists :class:`VOSVideo` s;
each knows its frames in processing order, the annotation PNGs that introduce objects
(DAVIS: the first frame only; YouTube-VOS: every frame where an object first appears) and
which frames get a result file.
"""
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Set

import numpy as np
from PIL import Image

from sine.data.datasets.common import require_path
from sine.data.synthetic.videos import davis_palette
from sine.engine.video_predictor import VOID_LABEL, frame_id_from_name

__all__ = ["DAVISReader", "VOSVideo", "YouTubeVOSReader", "read_label_map"]


def read_label_map(path: str) -> np.ndarray:
    """Palette (or grey) PNG -> (H, W) label map (palette indices, not colours)."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "1", "I"):
            raise ValueError(f"{path} is a {img.mode} image; annotations must be palette PNGs")
        return np.array(img).astype(np.int64)


def _read_palette(path: str) -> List[int]:
    with Image.open(path) as img:
        palette = img.getpalette() if img.mode == "P" else None
    return list(palette) if palette else davis_palette()


def _sorted_stems(folder: str, ext: str) -> List[str]:
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.lower().endswith(ext))


@dataclass
class VOSVideo:
    """One video of a benchmark.

    frame_names: frame file stems, processing order; frame_paths: their JPEG paths.
    annotations: frame name -> PNG introducing objects on that frame: every label of the PNG
        that is not tracked yet (0 = background and 255 = void excluded).
    output_frames: frames that get a result file (None = every frame).
    """

    name: str
    frame_names: List[str]
    frame_paths: List[str]
    annotations: Dict[str, str]
    output_frames: Optional[Set[str]] = None

    @property
    def frame_ids(self) -> List[int]:
        """Frame numbers from the file names (YouTube-VOS: steps of 5); drive memory decay."""
        return [frame_id_from_name(n, i) for i, n in enumerate(self.frame_names)]

    @property
    def palette(self) -> List[int]:
        """Palette of the first annotation PNG (results reuse it)."""
        first = self.annotations[min(self.annotations)]
        return _read_palette(first)

    def objects_at(self, frame_name: str, tracked) -> Dict[int, np.ndarray]:
        """``{object id: (H, W) bool}`` of the objects first given on ``frame_name``."""
        path = self.annotations.get(frame_name)
        if path is None:
            return {}
        labels = read_label_map(path)
        ids = [int(v) for v in np.unique(labels) if v not in (0, VOID_LABEL)]
        return {i: labels == i for i in ids if i not in tracked}

    def wants_output(self, frame_name: str) -> bool:
        return self.output_frames is None or frame_name in self.output_frames


def _select(names: List[str], videos: Optional[List[str]], where: str) -> List[str]:
    if not videos:
        return names
    missing = sorted(set(videos) - set(names))
    if missing:
        raise ValueError(f"video(s) {missing} are not in {where}")
    return [n for n in names if n in set(videos)]


class DAVISReader:
    """DAVIS 2016/2017 semi-supervised: objects come from the first frame's annotation only.

    ``root`` holds ``JPEGImages/<resolution>``, ``Annotations/<resolution>`` and
    ``ImageSets/<year>/<split>.txt`` (DAVIS-2016 uses the 2017 trainval folder with the 2016
    list, as the official evaluation does).
    """

    def __init__(self, root: str, year: str = "2017", split: str = "val",
                 resolution: str = "480p", videos: Optional[List[str]] = None):
        self.root, self.year, self.split = root, str(year), split
        self.image_dir = os.path.join(root, "JPEGImages", resolution)
        self.mask_dir = os.path.join(root, "Annotations", resolution)
        list_file = require_path(os.path.join(root, "ImageSets", self.year, f"{split}.txt"),
                                 f"davis{self.year[2:]}_{split}", "davis")
        with open(list_file) as f:
            names = [line.strip() for line in f if line.strip()]
        self.videos = [self._video(n) for n in _select(names, videos, list_file)]

    def _video(self, name: str) -> VOSVideo:
        image_dir = require_path(os.path.join(self.image_dir, name), f"davis/{name}", "davis",
                                 "dir")
        frames = _sorted_stems(image_dir, ".jpg")
        if not frames:
            raise ValueError(f"{image_dir} holds no .jpg frame")
        first = require_path(os.path.join(self.mask_dir, name, f"{frames[0]}.png"),
                             f"davis/{name}", "davis")
        return VOSVideo(name, frames, [os.path.join(image_dir, f + ".jpg") for f in frames],
                        {frames[0]: first})

    def has_full_ground_truth(self) -> bool:
        """True when every frame of every video has an annotation (val, not test-dev)."""
        for v in self.videos:
            folder = os.path.join(self.mask_dir, v.name)
            if not set(v.frame_names) <= set(_sorted_stems(folder, ".png")):
                return False
        return True


class YouTubeVOSReader:
    """YouTube-VOS 2018: objects appear on later frames; only annotated frames by default.

    ``root`` holds ``<split>/{JPEGImages,Annotations,meta.json}`` and, for ``all_frames``,
    ``all_frames/<split>_all_frames/JPEGImages``. Results are written for the annotated
    (every 5th) frames only, as the evaluation server expects.
    """

    def __init__(self, root: str, split: str = "valid", all_frames: bool = False,
                 videos: Optional[List[str]] = None):
        self.root, self.split, self.all_frames = root, split, all_frames
        self.split_dir = require_path(os.path.join(root, split), f"ytvos18_{split}",
                                      "youtube-vos", "dir")
        self.image_dir = os.path.join(self.split_dir, "JPEGImages")
        self.mask_dir = os.path.join(self.split_dir, "Annotations")
        self.all_frames_dir = os.path.join(root, "all_frames", f"{split}_all_frames", "JPEGImages")
        if all_frames:
            require_path(self.all_frames_dir, f"ytvos18_{split} (all frames)", "youtube-vos",
                         "dir")
        names = self._video_names()
        self.videos = [self._video(n) for n in _select(names, videos, self.split_dir)]

    def _video_names(self) -> List[str]:
        """Videos of meta.json, else the annotation folders."""
        meta_path = os.path.join(self.split_dir, "meta.json")
        if os.path.isfile(meta_path):
            with open(meta_path) as f:
                return sorted(json.load(f).get("videos", {}))
        require_path(self.mask_dir, f"ytvos18_{self.split}", "youtube-vos", "dir")
        return sorted(d for d in os.listdir(self.mask_dir)
                      if os.path.isdir(os.path.join(self.mask_dir, d)))

    def _video(self, name: str) -> VOSVideo:
        annotated = _sorted_stems(os.path.join(self.image_dir, name), ".jpg")
        frame_dir = os.path.join(self.all_frames_dir if self.all_frames else self.image_dir, name)
        frames = _sorted_stems(frame_dir, ".jpg")
        masks = _sorted_stems(os.path.join(self.mask_dir, name), ".png")
        missing = sorted(set(masks) - set(frames))
        if not frames or not masks or missing:
            raise ValueError(
                f"YouTube-VOS video {name}: {len(frames)} frames in {frame_dir}, annotations "
                f"{masks[:3]}..., annotated frames without an image: {missing[:3]}"
            )
        return VOSVideo(
            name, frames, [os.path.join(frame_dir, f + ".jpg") for f in frames],
            {m: os.path.join(self.mask_dir, name, m + ".png") for m in masks},
            set(annotated) if self.all_frames else None,
        )
