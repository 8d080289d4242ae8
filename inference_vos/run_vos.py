#!/usr/bin/env python
"""Semi-supervised video object segmentation with SINE (spec §7.3): DAVIS 2016/2017, YouTube-VOS.

    python -m inference_vos.run_vos --config-file configs/vos/davis17.yaml --dataset davis17 \\
        --root datasets/DAVIS/2017/trainval --output output/vos/davis17 \\
        MODEL.WEIGHTS models/pytorch_model.bin

Writes palette PNGs in the official layout (DAVIS ``<output>/<video>/<frame>.png``;
YouTube-VOS ``<output>/Annotations/<video>/<frame>.png`` and ``<output>/submission.zip``).
(``python inference_vos/run_vos.py ...`` works as well, from any directory.) Each video is
written atomically and marked done (``sine.evaluation.resume``); a rerun with the same settings
skips finished videos, one with other settings in the same folder stops. When the
ground truth covers every frame (DAVIS val), J&F is computed with
``sine/evaluation/davis_metrics.py``: table printed, ``<output>/jf_results.json`` (percent) and
the toolkit's CSV files (fractions) written.
"""
import argparse
import json
import logging
import os
import time
from typing import TYPE_CHECKING

# Only light modules at import time: `--help` must not wait for torch / detectron2, which the
# functions below import when they run.
from sine.utils.cli import add_launch_args

if TYPE_CHECKING:
    from inference_vos.video_reader import DAVISReader
    from sine.engine.video_predictor import VideoPredictor

logger = logging.getLogger("inference_vos.run_vos")

# name -> default root under $DETECTRON2_DATASETS, split, DAVIS year (None = YouTube-VOS)
DATASETS = {
    "davis17": ("DAVIS/2017/trainval", "val", "2017"),
    "davis16": ("DAVIS/2017/trainval", "val", "2016"),
    "ytvos18": ("YouTube", "valid", None),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="SINE semi-supervised video object segmentation")
    parser.add_argument("--config-file", required=True, help="e.g. configs/vos/davis17.yaml")
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--root", default=None,
                        help="dataset folder (default: $DETECTRON2_DATASETS/<DAVIS/2017/trainval "
                             "| YouTube>), see datasets/README.md#davis")
    parser.add_argument("--split", default=None, help="DAVIS: val (default); YouTube: valid")
    parser.add_argument("--output", required=True, help="results folder")
    parser.add_argument("--videos", nargs="+", default=None, help="only these videos")
    parser.add_argument("--all-frames", action="store_true",
                        help="YouTube-VOS: process every frame (results still for annotated ones); "
                             "same as TEST.VOS.ALL_FRAMES True")
    parser.add_argument("--no-eval", action="store_true", help="skip the J&F evaluation")
    add_launch_args(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def setup_cfg(args):
    """The frozen config of this run (with logging to ``--output``)."""
    from sine.evaluation.suite_setup import setup_suite

    return setup_suite(args.config_file, args.opts, "inference_vos", output_dir=args.output)


def build_reader(args):
    from inference_vos.video_reader import DAVISReader, YouTubeVOSReader
    from sine.data.datasets.common import datasets_root

    default_root, default_split, year = DATASETS[args.dataset]
    root = args.root or os.path.join(datasets_root(), default_root)
    split = args.split or default_split
    if year is None:
        return YouTubeVOSReader(root, split, all_frames=args.all_frames, videos=args.videos)
    return DAVISReader(root, year=year, split=split, videos=args.videos)


def segment_video(vp: "VideoPredictor", video, out) -> int:
    """Run one video frame by frame, writing its result frames; returns the frame count."""
    from tqdm import tqdm

    vp.reset()
    tracked = set()
    frames = zip(video.frame_names, video.frame_paths, video.frame_ids)
    for name, path, frame_id in tqdm(frames, total=len(video.frame_names), desc=video.name,
                                     leave=False):
        new = video.objects_at(name, tracked)
        result = vp.step(path, new or None, frame_id)
        tracked.update(new)
        if video.wants_output(name):
            out.write(name, result.labels)
    return len(video.frame_names)


def run_videos(vp, videos, writer):
    """Segment every unfinished video; returns (done now, skipped, frames, seconds)."""
    from detectron2.utils import comm
    from tqdm import tqdm

    done, skipped, frames, seconds = [], [], 0, 0.0
    for video in tqdm(videos, desc="videos", disable=not comm.is_main_process()):
        if writer.is_done(video.name):
            skipped.append(video.name)
            continue
        start = time.perf_counter()
        with writer.video(video.name, video.palette) as out:
            n = segment_video(vp, video, out)
            out.info.update(frames=n, seconds=time.perf_counter() - start)
        done.append(video.name)
        frames += n
        seconds += out.info["seconds"]
    if skipped:
        logger.info("skipped %d finished video(s): %s", len(skipped), ", ".join(skipped))
    return done, skipped, frames, seconds


def evaluate_davis(reader: "DAVISReader", results_dir: str, output_dir: str):
    """J&F of the DAVIS results (percent); None without full ground truth."""
    from sine.evaluation.davis_metrics import DAVISEvaluation

    if not reader.has_full_ground_truth():
        logger.info("the ground truth does not cover every frame (test-dev?): no J&F")
        return None
    evaluation = DAVISEvaluation(reader.root, gt_set=reader.split, year=reader.year,
                                 sequences=[v.name for v in reader.videos])
    tables = evaluation.evaluate(results_dir, output_dir=output_dir)
    return {
        "global": {k: 100.0 * v for k, v in tables["global"].items()},
        "per_object": {name: {k: 100.0 * v for k, v in row.items()}
                       for name, row in tables["per_object"].items()},
    }


def format_table(title, global_scores):
    keys = list(global_scores)
    lines = [title, "".join(f"{k:>10}" for k in keys),
             "".join(f"{global_scores[k]:>10.1f}" for k in keys)]
    return "\n".join(lines)


def main(argv=None):
    """Run the CLI; returns the summary (also ``<output>/jf_results.json`` when evaluated).

    With ``--num-gpus`` / ``--num-machines`` the videos are shared out over several processes;
    the main process then evaluates them all (the summary is read back from
    ``<output>/summary.json``).
    """
    args = parse_args(argv)
    from sine.evaluation.suite_setup import launch_suite

    if launch_suite(run, args):
        if args.machine_rank != 0:
            return None
        with open(os.path.join(args.output, "summary.json")) as f:
            return json.load(f)
    return run(args)


def run(args):
    """The run in one process (of possibly several); the summary on the main one.

    Videos are sharded over the processes (video i -> process i mod N); each writes its
    videos atomically with its own done markers, so resuming works per video whatever the
    number of processes. The main process waits for all, then evaluates / zips.
    """
    from detectron2.utils import comm

    from inference_vos.results import VOSResultWriter
    from inference_vos.video_reader import YouTubeVOSReader
    from sine.engine.predictor import InContextPredictor
    from sine.engine.video_predictor import VideoPredictor
    from sine.evaluation.resume import model_identity
    from sine.evaluation.suite_setup import gather_to_main
    from sine.utils.io import atomic_write_json
    from sine.utils.throughput import Throughput

    cfg = setup_cfg(args)
    args.all_frames = args.all_frames or cfg.TEST.VOS.ALL_FRAMES
    reader = build_reader(args)
    youtube = isinstance(reader, YouTubeVOSReader)
    settings = {"dataset": args.dataset, "split": reader.split, "all_frames": args.all_frames,
                **model_identity(cfg)}
    writer = VOSResultWriter(args.output, youtube=youtube, settings=settings)
    vp = VideoPredictor(InContextPredictor(cfg))
    shard = reader.videos[comm.get_rank()::comm.get_world_size()]
    gathered = gather_to_main(run_videos(vp, shard, writer))
    comm.synchronize()  # every video written before the main process evaluates them
    if gathered is None:
        return None
    order = {v.name: i for i, v in enumerate(reader.videos)}
    done = sorted((v for g in gathered for v in g[0]), key=order.get)
    skipped = sorted((v for g in gathered for v in g[1]), key=order.get)
    # Processes run side by side: all their frames over the longest one's time.
    frames, seconds = sum(g[2] for g in gathered), max(g[3] for g in gathered)
    summary = {
        "dataset": args.dataset, "split": reader.split, "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS, "videos": len(reader.videos), "processed": done,
        "skipped": skipped, "fps": frames / seconds if seconds else None,
    }
    throughput = Throughput("frames", frames, seconds)  # videos of this run, writing included
    if youtube:
        summary["submission"] = writer.submission_zip()
        logger.info("YouTube-VOS submission: %s", summary["submission"])
    elif not args.no_eval:
        scores = evaluate_davis(reader, writer.results_dir, args.output)
        if scores is not None:
            summary.update(scores)
            atomic_write_json(os.path.join(args.output, "jf_results.json"), summary)
            print(format_table(f"{args.dataset} {reader.split} (percent)", scores["global"]))
    atomic_write_json(os.path.join(args.output, "summary.json"), summary)
    print(throughput)
    return summary


if __name__ == "__main__":
    main()
