"""Video object segmentation throughput: cached features vs re-encoding memory frames.

Runs ``sine.engine.video_predictor.VideoPredictor`` on synthetic videos generated on the fly
(ellipses bouncing over a textured background; never stored) and reports frames/s, DINOv2
images encoded per frame and peak memory against the number of objects, the memory length
(``MODEL.SINE.VOS.MEMORY_LEN``) and the video length. Paths (``--paths``):

* ``cached``: ``MODEL.SINE.VOS.CACHE_FEATURES True`` (default): every frame is encoded once
  and memory entries keep its neck features;
* ``reencode``: ``CACHE_FEATURES False``: memory entries keep the image and every distinct
  memory frame is re-encoded at every step;
* ``per-object``: the official cost model (spec §7.3): every memory frame of *every object*
  is re-encoded at every step, in chunks of ``VOS.ENCODE_CHUNK`` (a subclass of VideoPredictor
  that only changes where the reference features come from).

The model has random weights with the real sizes (DINOv2 ViT-S/14 by default, FEAT_CHANS 256,
200 queries) on small frames (``--pad-size``) so that 1000 frames take minutes on a CPU.
Every (configuration, path) runs in a fresh child process, so its peak RSS is its own; paths
alternate within one invocation of this script. Frames/s are measured after the memory has
filled (frames past ``--skip`` = 10 by default).

    python benchmarks/bench_vos.py --quick
    python benchmarks/bench_vos.py --objects 3 --memory 6 --lengths 100 --pad-size 224
"""
import argparse
import json
import os
import sys
import time

import _common as C  # noqa: N812  (also puts the repository on sys.path)
import numpy as np
import torch

PATHS = ("cached", "reencode", "per-object")


# ------------------------------------------------------------------ synthetic video
def synthetic_video(num_objects: int, length: int, size, seed: int = 0):
    """Yields (H, W, 3) uint8 frames; the first comes with its (H, W) label map (ids 1..n)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    waves = [np.sin(xx / rng.uniform(3, 9) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(3, 9))
             for _ in range(3)]
    background = (np.stack(waves, -1) * 60 + 110).astype(np.float32)
    radius = np.stack([rng.uniform(0.12, 0.22, num_objects) * h,
                       rng.uniform(0.08, 0.16, num_objects) * w], 1)
    pos = np.stack([rng.uniform(0.3, 0.7, num_objects) * h,
                    rng.uniform(0.15, 0.85, num_objects) * w], 1)
    vel = rng.uniform(-0.02, 0.02, (num_objects, 2)) * np.array([h, w])
    colours = rng.uniform(0, 255, (num_objects, 3)).astype(np.float32)
    for t in range(length):
        frame = background + rng.normal(0, 4, background.shape).astype(np.float32)
        labels = np.zeros((h, w), np.uint8)
        for k in range(num_objects):
            inside = ((yy - pos[k, 0]) / radius[k, 0]) ** 2 + ((xx - pos[k, 1]) / radius[k, 1]) ** 2
            mask = inside <= 1
            frame[mask] = colours[k]
            labels[mask] = k + 1
        pos += vel
        bounce = (pos < radius) | (pos > np.array([h, w]) - radius)
        vel[bounce] *= -1
        frame = np.clip(frame, 0, 255).astype(np.uint8)
        yield frame, (labels if t == 0 else None)


# ------------------------------------------------------------------ predictors
def per_object_predictor_class():
    from sine.engine.predictor import pad_masks
    from sine.engine.video_predictor import VideoPredictor
    from sine.modeling.in_context import concat_features

    class PerObjectReencoding(VideoPredictor):
        """Official cost model: each object re-encodes all of its memory frames every step."""

        def _references(self):
            size = self.pad_size
            feats, masks, labels = [], [], []
            for obj_id in self.bank.object_ids:
                entries = sorted(self.bank.get_memory(obj_id), key=lambda e: e.frame_id)
                images = [e.payload[0].image for e in entries]
                for i in range(0, len(images), self.encode_chunk):
                    feats.append(self._encode(images[i:i + self.encode_chunk]))
                for e in entries:
                    masks.append(pad_masks(e.payload[1][None], size))
                    labels.append(torch.tensor([obj_id], device=self.device))
            return concat_features(feats), masks, labels

    return PerObjectReencoding


def build_video_predictor(args_dict):
    from sine.engine.predictor import SinePredictor
    from sine.engine.video_predictor import VideoPredictor

    a = args_dict
    opts = ["MODEL.DINOV2.ARCH", a["arch"], "MODEL.SINE.PAD_SIZE", str(a["pad"]),
            "MODEL.SINE.VOS.PAD_SIZE", str(a["pad"]), "MODEL.SINE.VOS.SHORT_SIDE", "0",
            "MODEL.SINE.VOS.MEMORY_LEN", str(a["memory"]),
            "MODEL.SINE.VOS.CACHE_FEATURES", str(a["path"] == "cached"),
            "MODEL.SINE.FAST_INFERENCE", str(a["fast"])]
    torch.manual_seed(0)
    predictor = SinePredictor(C.sine_cfg(opts))
    cls = per_object_predictor_class() if a["path"] == "per-object" else VideoPredictor
    return cls(predictor)


# ------------------------------------------------------------------ child: one run
def child_main(spec: str):
    a = json.loads(spec)
    torch.set_num_threads(a["threads"])
    import logging
    logging.disable(logging.WARNING)  # "random weights" warnings
    vp = build_video_predictor(a)
    counter = {"images": 0, "calls": 0}

    def count(module, inputs):
        counter["images"] += inputs[0].shape[0]
        counter["calls"] += 1

    vp.model.image_encoder.encoder.register_forward_pre_hook(count)
    frame_size = (a["pad"] * 9 // 16, a["pad"])
    base = C.rss_mib()
    times, images, fg, max_memory_frames = [], [], [], 0
    with torch.no_grad():
        for t, (frame, labels) in enumerate(synthetic_video(a["objects"], a["length"],
                                                            frame_size, a["seed"])):
            before = counter["images"]
            start = time.perf_counter()
            result = vp.start(frame, labels) if t == 0 else vp.step(frame)
            times.append(time.perf_counter() - start)
            images.append(counter["images"] - before)
            max_memory_frames = max(max_memory_frames, vp.num_memory_frames)
            if t < a["compare_frames"]:
                fg.append([int(result.masks[i].sum()) for i in sorted(result.masks)])
    skip = min(a["skip"], len(times) - 1)
    steady = times[skip:]
    print(json.dumps({
        "fps": len(steady) / sum(steady),
        "fps_all": len(times) / sum(times),
        "images_per_frame": sum(images[skip:]) / len(steady),
        "max_images_per_frame": max(images),
        "calls": counter["calls"],
        "max_memory_frames": max_memory_frames,
        "peak_mib": C.peak_rss_mib(),
        "base_mib": base,
        "fg": fg,
    }))


# ------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", default="1,3,5")
    p.add_argument("--memory", default="2,6", help="MODEL.SINE.VOS.MEMORY_LEN values")
    p.add_argument("--lengths", default="100,1000", help="video lengths (frames)")
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--reencode-max-length", type=int, default=100,
                   help="paths other than 'cached' only run videos up to this length (the "
                        "re-encoding ones are slow; frames/s is steady once the memory is full)")
    p.add_argument("--arch", default="vit_small")
    p.add_argument("--pad-size", type=int, default=112,
                   help="MODEL.SINE.PAD_SIZE; frames are 16:9 with this longer side")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", type=int, default=10, help="frames excluded from frames/s")
    p.add_argument("--compare-frames", type=int, default=10,
                   help="frames whose masks are compared between paths")
    p.add_argument("--reference-path", action="store_true",
                   help="run with MODEL.SINE.FAST_INFERENCE False (official computation)")
    p.add_argument("--quick", action="store_true",
                   help="3 objects, memory 6, 100 frames (and 1000 frames cached)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2])
    args = parse_args()
    if args.quick:
        args.objects, args.memory = "3", "6"
    C.print_machine()
    print(f"command: python {' '.join([os.path.relpath(__file__, C.ROOT), *sys.argv[1:]])}\n")
    paths = args.paths.split(",")
    rows, runs = [], 0
    for objects in map(int, args.objects.split(",")):
        for memory in map(int, args.memory.split(",")):
            for length in map(int, args.lengths.split(",")):
                todo = [p for p in paths
                        if p == "cached" or length <= args.reencode_max_length]
                if runs % 2:
                    todo = todo[::-1]  # alternate which path runs first
                runs += 1
                res = {}
                for path in todo:
                    spec = dict(objects=objects, memory=memory, length=length, path=path,
                                arch=args.arch, pad=args.pad_size, threads=args.threads,
                                skip=args.skip, compare_frames=args.compare_frames,
                                seed=args.seed, fast=not args.reference_path)
                    res[path] = C.run_child(__file__, [json.dumps(spec)], timeout=24 * 3600)
                for path in [p for p in paths if p in res]:
                    r = res[path]
                    speedups = [f"{r['fps'] / res[b]['fps']:.1f}x" if b in res else "-"
                                for b in ("reencode", "per-object")]
                    same = "-" if path == "cached" or "cached" not in res else \
                        ("yes" if r["fg"] == res["cached"]["fg"] else "NO")
                    rows.append([objects, memory, length, path, f"{r['fps']:.2f}", *speedups,
                                 f"{r['images_per_frame']:.2f}", r["max_memory_frames"],
                                 f"{r['peak_mib']:.0f}", f"{r['peak_mib'] - r['base_mib']:.0f}",
                                 same])
                    print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print(f"## VOS ({args.arch}, pad {args.pad_size}, frames {args.pad_size * 9 // 16}x"
          f"{args.pad_size}, {args.threads} thread(s), frames/s after frame {args.skip})")
    print(C.markdown_table(
        ["objects", "memory", "frames", "path", "frames/s", "vs reencode", "vs per-object",
         "encoded images/frame", "memory frames", "peak MiB", "run Δ MiB",
         f"masks = cached (first {args.compare_frames})"], rows))
    C.print_load_average()


if __name__ == "__main__":
    main()
