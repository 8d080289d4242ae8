"""Training throughput and peak memory: optimised (fused attention) vs official computation.

One iteration = forward of ``SOLVER.IMS_PER_BATCH`` synthetic pairs in training mode, losses,
backward and an optimizer step (``sine.solver.build_sine_optimizer``), on the demo config
(``configs/demo/sine_synthetic_tiny.yaml``: a small ViT trained from scratch) unless
``--config`` says otherwise; ``--size`` changes the image / pad size. Paths alternate every
iteration in one process (same model and optimizer; speed does not depend on the weights);
peak memory comes from one child process per path.

    python benchmarks/bench_train.py                  # demo config, 224 px
    python benchmarks/bench_train.py --size 448 --iters 6
"""
import argparse
import json
import os
import statistics
import sys

import _common as C  # noqa: N812  (also puts the repository on sys.path)
import torch
from detectron2.structures import Instances

DEMO_CONFIG = os.path.join(C.ROOT, "configs", "demo", "sine_synthetic_tiny.yaml")


BOXES = ((1 / 8, 1 / 8, 1 / 2, 1 / 2), (1 / 2, 1 / 3, 7 / 8, 5 / 6), (1 / 6, 2 / 3, 1 / 3, 15 / 16))


def _instances(size: int, shift: int) -> Instances:
    """Three boxes (classes 0, 1, 1; ids 1, 2, 3) moved down by ``shift`` pixels."""
    masks = torch.zeros(len(BOXES), size, size, dtype=torch.bool)
    for m, box in zip(masks, BOXES):
        y0, x0, y1, x1 = (int(v * size) for v in box)
        m[y0 + shift:y1 + shift, x0:x1] = True
    return Instances((size, size), gt_masks=masks, gt_classes=torch.tensor([0, 1, 1]),
                     ins_ids=torch.tensor([1, 2, 3]))


def train_batch(batch_size: int, size: int, seed: int = 0):
    """Pairs whose target shares instance ids with its reference (ID + class supervision)."""
    g = torch.Generator().manual_seed(seed)

    def image():
        return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)

    return [{"image": image(), "instances": _instances(size, size // 16),
             "references": [{"image": image(), "instances": _instances(size, 0)}]}
            for _ in range(batch_size)]


def build(args):
    from detectron2.modeling import build_model

    from sine.solver import build_sine_optimizer

    cfg = C.sine_cfg([])
    cfg.merge_from_file(args.config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.SINE.PAD_SIZE", str(args.size),
                         "INPUT.IMAGE_SIZE", str(args.size)])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    return cfg, model, build_sine_optimizer(cfg, model)


def make_step(model, optimizer, batch, path):
    def step():
        model.set_fast_inference(path == "fast")
        losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    return step


def child_main(spec):
    a = argparse.Namespace(**json.loads(spec))
    torch.set_num_threads(a.threads)
    cfg, model, optimizer = build(a)
    batch = train_batch(cfg.SOLVER.IMS_PER_BATCH, a.size)
    step = make_step(model, optimizer, batch, a.path)
    base = C.rss_mib()
    for _ in range(2):
        step()
    print(json.dumps({"peak_mib": C.peak_rss_mib(), "base_mib": base}))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=DEMO_CONFIG)
    p.add_argument("--size", type=int, default=224, help="MODEL.SINE.PAD_SIZE = INPUT.IMAGE_SIZE")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per path")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paths", default="ref,fast")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    return p.parse_args(argv)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2])
    args = parse_args()
    torch.set_num_threads(args.threads)
    C.print_machine()
    print(f"command: python {' '.join([os.path.relpath(__file__, C.ROOT), *sys.argv[1:]])}\n")
    cfg, model, optimizer = build(args)
    batch = train_batch(cfg.SOLVER.IMS_PER_BATCH, args.size)
    paths = args.paths.split(",")
    steps = {p: make_step(model, optimizer, batch, p) for p in paths}
    times = C.interleaved_timings(steps, args.iters, args.warmup)
    rows = []
    for p in paths:
        mem = {}
        if args.memory:
            spec = dict(vars(args), path=p)
            mem = C.run_child(__file__, [json.dumps(spec)])
        ratio = C.paired_ratio(times["ref"], times[p]) if "ref" in paths else float("nan")
        rows.append([os.path.relpath(args.config, C.ROOT), args.size,
                     cfg.SOLVER.IMS_PER_BATCH, args.threads, p,
                     f"{1 / statistics.median(times[p]):.2f}", f"{ratio:.2f}x",
                     f"{mem['peak_mib']:.0f}" if mem else "-",
                     f"{mem['peak_mib'] - mem['base_mib']:.0f}" if mem else "-"])
    print(f"## Training ({args.iters} iterations per path, {args.warmup} warm-up)")
    print(C.markdown_table(["config", "size", "batch", "threads", "path", "it/s",
                            "speed-up vs ref", "peak MiB", "2 iterations Δ MiB"], rows))
    C.print_load_average()


if __name__ == "__main__":
    main()
