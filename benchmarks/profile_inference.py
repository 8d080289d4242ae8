"""Where one pair's time goes: official work vs the fast path, stage by stage.

Runs one pair (as ``bench_inference.py``: random ViT-S/B/L weights at the real sizes, one
4:3 target + one reference, output 480 x 640) per path and times its stages with forward hooks
(wall clock, one run after a warm-up):

* ``ViT`` (DINOv2 blocks, both images), ``neck``, ``mask features`` (the 4x upsampling of the
  target), ``reference pooling``, ``fusion`` (In-Context Fusion), ``decoder blocks`` (the six
  M-Former blocks), ``prediction heads`` (class / mask heads and cross-attention masks),
  ``decoder (rest)`` (queries, positional prior, masks between blocks), ``post-processing``;
* the post-processing's heaviest operators (``torch.profiler`` self time), e.g. the bilinear
  upsampling, the sigmoid and the class-mask product.

Paths as in ``bench_inference.py``: ``official`` (the official work: official computation,
semantic map only, at the padded size), ``fast-sem`` (fast path, semantic map only), ``ref``
and ``fast`` (all three outputs).

    python benchmarks/profile_inference.py --sizes 518,896 --threads 2
"""
import argparse
import os
import sys
import time
from collections import defaultdict

import _common as C  # noqa: N812  (also puts the repository on sys.path)
import torch
from bench_inference import make_runner, model_opts, pair_inputs
from torch.profiler import ProfilerActivity, profile

STAGES = ("ViT", "neck", "mask features", "reference pooling", "fusion", "decoder blocks",
          "prediction heads", "decoder (rest)", "post-processing")


class StageTimer:
    """Wall-clock seconds per stage of one model, from hooks that :meth:`remove` takes away."""

    def __init__(self, model):
        self.seconds = defaultdict(float)
        self._handles, self._patched = [], []
        dec = model.transformer_decoder
        self._hook_module("ViT", model.image_encoder.encoder)
        self._hook_module("neck", model.image_encoder.neck)
        self._hook_module("mask features", dec.mask_feat_layer)
        self._hook_module("fusion", dec.fusion_layers)
        for layer in dec.transformer_layers:
            self._hook_module("decoder blocks", layer)
        self._wrap(dec, "pool_references", "reference pooling")
        self._wrap(dec, "forward_prediction_heads", "prediction heads")
        self._wrap(dec, "forward_tokens", "decoder (all)")
        self._wrap(model, "postprocess", "post-processing")

    def _hook_module(self, stage, module):
        starts = []
        self._handles.append(module.register_forward_pre_hook(
            lambda *_: starts.append(time.perf_counter())))
        self._handles.append(module.register_forward_hook(
            lambda *_: self._add(stage, time.perf_counter() - starts.pop())))

    def _wrap(self, owner, name, stage):
        method = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._add(stage, time.perf_counter() - start)

        setattr(owner, name, timed)  # an instance attribute, deleted by remove()
        self._patched.append((owner, name))

    def _add(self, stage, seconds):
        self.seconds[stage] += seconds

    def table(self, total):
        s = dict(self.seconds)
        inner = sum(s.get(k, 0.0) for k in ("mask features", "fusion", "decoder blocks",
                                             "prediction heads"))
        s["decoder (rest)"] = s.pop("decoder (all)", 0.0) - inner
        s["other"] = total - sum(s.get(k, 0.0) for k in STAGES)
        return s

    def remove(self):
        for h in self._handles:
            h.remove()
        for owner, name in self._patched:
            delattr(owner, name)


def postprocess_ops(model, run, top=4):
    """Heaviest operators (self CPU seconds) inside ``model.postprocess`` during one run."""
    method = model.postprocess
    prof = {}

    def profiled(*args, **kwargs):
        with profile(activities=[ProfilerActivity.CPU]) as p:
            out = method(*args, **kwargs)
        prof["p"] = p
        return out

    model.postprocess = profiled
    try:
        run()
    finally:
        del model.postprocess
    events = sorted(prof["p"].key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return ", ".join(f"{e.key.replace('aten::', '')} {e.self_cpu_time_total / 1e6:.3f}"
                     for e in events)


def profile_config(arch, size, threads, paths):
    torch.set_num_threads(threads)
    _, model = C.build_sine(model_opts(arch, size), "cpu")
    inputs = pair_inputs(size)
    columns, ops = {}, {}
    for path in paths:
        run = make_runner(model, path, inputs)
        run()  # warm-up (pos-embed cache, allocator)
        timer = StageTimer(model)
        try:
            total = C.timed(run)
        finally:
            timer.remove()
        columns[path] = {**timer.table(total), "total": total}
        ops[path] = postprocess_ops(model, run)
    return columns, ops


def _share(column, stage):
    return f"{column[stage]:.3f} ({100 * column[stage] / column['total']:.0f}%)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="vit_small")
    parser.add_argument("--sizes", default="518,896")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--paths", default="official,fast-sem,ref,fast")
    args = parser.parse_args()
    C.print_machine()
    print(f"command: python {' '.join([os.path.relpath(__file__, C.ROOT), *sys.argv[1:]])}\n")
    paths = args.paths.split(",")
    for arch in args.archs.split(","):
        for size in map(int, args.sizes.split(",")):
            for threads in map(int, args.threads.split(",")):
                columns, ops = profile_config(arch, size, threads, paths)
                print(f"## {arch}, {size}², {threads} thread(s): seconds per stage (share)")
                rows = []
                for stage in (*STAGES, "other", "total"):
                    rows.append([stage, *(_share(columns[p], stage) for p in paths)])
                print(C.markdown_table(["stage", *paths], rows))
                print("\npost-processing, heaviest operators (self seconds):")
                for p in paths:
                    print(f"- {p}: {ops[p]}")
                print(flush=True)
    C.print_load_average()


if __name__ == "__main__":
    main()
