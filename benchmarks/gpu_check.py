"""GPU-only branches and GPU numbers in one run (never part of the test suite).

Prepared on a CPU-only machine and NOT run there: the numbers it prints have not been seen yet.

1. A training step with AMP under detectron2's ``launch`` (train_net.py, 1 GPU, the synthetic
   demo, ``SOLVER.AMP.ENABLED True``): iterations/s from its metrics.
2. Pair latency, fp32 SDPA vs bf16 autocast (``MODEL.SINE.AUTOCAST_BF16``) vs the official
   computation, ViT-S and ViT-L at 896² and 1036² (benchmarks/bench_inference.py --device cuda).
3. FSS episodes/s with cached references: one ``set_reference``, then ``predict`` of many
   targets asking for ``sem_seg`` only (ViT-L, 896², random weights).

    python benchmarks/gpu_check.py [--quick]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import _common as C  # noqa: N812  (also puts the repository on sys.path)
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def train_with_amp(iters: int) -> str:
    from sine.data.synthetic import generate_synthetic

    root = tempfile.mkdtemp(prefix="gpu_check_data")
    out = tempfile.mkdtemp(prefix="gpu_check_train")
    generate_synthetic(root, seed=0, num_train=32, num_val=4, num_videos=1, fewshot_seeds=1)
    cmd = [sys.executable, os.path.join(C.ROOT, "train_net.py"), "--num-gpus", "1",
           "--config-file", os.path.join(C.ROOT, "configs", "demo", "sine_synthetic_tiny.yaml"),
           "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", str(iters),
           "DATASETS.TEST", "()", "OUTPUT_DIR", out]
    env = dict(os.environ, DETECTRON2_DATASETS=root)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - start
    with open(os.path.join(out, "metrics.json")) as f:
        times = [json.loads(line).get("time") for line in f if '"time"' in line]
    times = [t for t in times if t]
    per_iter = float(np.median(times)) if times else float("nan")
    return f"AMP training under launch: {1 / per_iter:.2f} it/s (median), wall {wall:.0f} s"


def fss_episodes_per_second(arch: str, size: int, targets: int) -> str:
    from sine.engine.predictor import InContextPredictor

    cfg = C.sine_cfg(["MODEL.DINOV2.ARCH", arch, "MODEL.SINE.PAD_SIZE", str(size),
                      "MODEL.SINE.AUTOCAST_BF16", "True"], "cuda")
    predictor = InContextPredictor(cfg)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (size * 3 // 4, size, 3), dtype=np.uint8)
    mask = np.zeros(ref.shape[:2], bool)
    mask[size // 8: size // 2, size // 8: size // 2] = True
    predictor.set_reference(ref, mask[None])
    images = [rng.integers(0, 256, ref.shape, dtype=np.uint8) for _ in range(targets)]
    predictor.predict(images[0], outputs={"sem_seg"})  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for image in images:
        predictor.predict(image, outputs={"sem_seg"})
    torch.cuda.synchronize()
    rate = targets / (time.perf_counter() - start)
    return f"FSS with cached references, {arch} {size}², bf16: {rate:.1f} episodes/s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ViT-S only, fewer iterations")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check.py needs a CUDA GPU")
    C.print_machine("cuda")
    lines = [train_with_amp(20 if args.quick else 100)]
    archs = "vit_small" if args.quick else "vit_small,vit_large"
    subprocess.run([sys.executable, os.path.join(HERE, "bench_inference.py"), "--device", "cuda",
                    "--archs", archs, "--sizes", "896,1036", "--threads", "1",
                    "--paths", "ref,fast,fast-bf16", "--repeats", "5"], check=True)
    lines.append(fss_episodes_per_second("vit_small" if args.quick else "vit_large", 896,
                                         20 if args.quick else 100))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
