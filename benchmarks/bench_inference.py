"""Per-pair inference latency and peak memory of SINE: optimised vs official computation.

One "pair" = ``model([target with one reference])`` in eval mode: both images through DINOv2 +
neck, fusion, decoder and post-processing (semantic, instance and ID results). The model has
random weights but the real sizes (DINOv2 ViT-S/B/L/14, FEAT_CHANS 256, 200 queries, 6 decoder
blocks). Images are 4:3 (longer side = the pad size, as the predictor resizes them), padded to a
square, and results are returned at 480 x 640.

Paths (``--paths``): ``ref`` = ``MODEL.SINE.FAST_INFERENCE False`` (official computation),
``fast`` = the default optimised path, ``fast-compile`` = fast + ``torch.compile`` of the ViT,
``fast-bf16`` = fast + bf16 autocast (CUDA only).

Semantic-only paths (the FSS workload), compared with ``official``: ``official`` = the official
work, i.e. the official computation returning the semantic map only, computed at the padded size
and then cropped and resized (spec §5.1); ``fast-sem`` = the fast path asked for ``sem_seg`` only;
``onnx-sem``, ``int8-sem``, ``bf16-sem`` = the fast path with the CPU speed options "onnx"
(encoder and decoder in onnxruntime; export not timed), "int8" (dynamic int8 quantisation of the
ViT's linear layers), "bf16" (the ViT under CPU bf16 autocast) of sine/engine/acceleration.py;
``auto-sem`` = the option ``choose_acceleration`` picks on this machine (measured per
configuration and thread count, cache disabled; not timed), whose table of candidates (latency
and agreement with fp32 on a synthetic pair) is printed after the results. Their agreement
column gives the semantic map's max |diff| and the IoU of the binarised FSS prediction
(map > 0.7) with the official-work output.

Latencies of all paths are measured in one process, alternating path order every round; the
speed-up is the median over rounds of the per-round ratio. Peak memory comes from a fresh child
process per configuration and path.

    python benchmarks/bench_inference.py --quick            # ViT-S, 518 and 896, 1 and 2 threads
    python benchmarks/bench_inference.py --archs vit_small --sizes 896 --threads 2 --repeats 5
"""
import argparse
import copy
import json
import os
import statistics
import sys
import tempfile

import _common as C  # noqa: N812  (also puts the repository on sys.path)
import torch
from detectron2.structures import Instances

from sine.engine.acceleration import accelerate, choose_acceleration
from sine.export.onnx import OnnxSegmenter
from sine.modeling.in_context import ImageGeometry, select_features

ARCHS = ("vit_small", "vit_base", "vit_large")
OUTPUT_SIZE = (480, 640)
STAGES = ("encode", "decode", "post-process")


def model_opts(arch: str, size: int):
    return ["MODEL.DINOV2.ARCH", arch, "MODEL.SINE.PAD_SIZE", str(size),
            "MODEL.SINE.FEAT_CHANS", "256", "MODEL.SINE.MASK_DIM", "256",
            "MODEL.SINE.NUM_QUERIES", "200"]


def pair_inputs(size: int, seed: int = 0):
    """One target with one reference (two masks, two classes), 4:3 content of side ``size``."""
    g = torch.Generator().manual_seed(seed)
    h, w = size * 3 // 4, size

    def image():
        return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)

    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, h // 8: h // 2, w // 8: w // 2] = True
    masks[1, h // 2: h * 7 // 8, w // 2: w * 7 // 8] = True
    inst = Instances((h, w), gt_masks=masks, gt_classes=torch.tensor([0, 1]),
                     ins_ids=torch.tensor([0, 1]))
    return [{"image": image(), "height": OUTPUT_SIZE[0], "width": OUTPUT_SIZE[1],
             "references": [{"image": image(), "instances": inst}]}]


SEM_PATHS = ("official", "fast-sem", "onnx-sem", "int8-sem", "bf16-sem", "auto-sem")
#: The semantic-only path of each acceleration option (sine/engine/acceleration.py).
OPTION_PATHS = {"fp32": "fast-sem", "onnx": "onnx-sem", "int8": "int8-sem", "bf16": "bf16-sem"}
FSS_THRESH = 0.7  # MODEL.SINE.TEST.SEM_SEG_THRESH


def apply_path(model, path: str):
    """Configure ``model`` for a path; returns the module to call."""
    model.set_fast_inference(path not in ("ref", "official"))  # *-sem: fast
    model.autocast_bf16 = path == "fast-bf16"
    return model


def torch_model(model):
    """The PyTorch model behind a path's model (the ONNX segmenter post-processes with it)."""
    return model.model if isinstance(model, OnnxSegmenter) else model


def path_model(model, path: str, onnx_dir: str, choice=None):
    """The model a path runs: the shared one, or the shared one with an acceleration option
    (``choice``: the :class:`AccelerationChoice` of ``auto-sem``)."""
    option = {p: o for o, p in OPTION_PATHS.items()}.get(path)
    if path == "auto-sem":
        option = choice.name
    if option is None:
        return model
    return accelerate(apply_path(model, "fast-sem"), option, onnx_dir)


def choose(model, onnx_dir):
    """``choose_acceleration`` on the fast path (cache disabled: every run measures)."""
    return choose_acceleration(apply_path(model, "fast-sem"), cache=False, onnx_dir=onnx_dir)


def make_runner(model, path, inputs):
    def run():
        if path in SEM_PATHS:
            apply_path(torch_model(model), path)
            with torch.no_grad():
                return model.segment_batch(inputs, outputs={"sem_seg"})
        apply_path(model, path)
        with torch.no_grad():
            return model(inputs)
    return run


def compare_semantic(a, b) -> str:
    """Semantic maps of one pair: max |diff| and IoU of the binarised FSS predictions."""
    a, b = a[0]["sem_seg"].float(), b[0]["sem_seg"].float()
    pa, pb = a > FSS_THRESH, b > FSS_THRESH
    union = (pa | pb).sum().item()
    iou = (pa & pb).sum().item() / union if union else 1.0
    return f"sem max diff {(a - b).abs().max().item():.1e}, FSS IoU {iou:.4f}"


def compare_results(a, b) -> str:
    """How far two results of one pair are apart (sem_seg values, discrete instance/ID sets)."""
    if "id" not in a[0] or "id" not in b[0]:
        return compare_semantic(a, b)
    a, b = a[0], b[0]
    sem = (a["sem_seg"].float() - b["sem_seg"].float()).abs().max().item()
    same = all(
        len(a[k]) == len(b[k])
        and torch.equal(a[k].pred_classes, b[k].pred_classes)
        and (a[k].pred_masks != b[k].pred_masks).float().mean().item() < 1e-4
        for k in ("instances", "id")
    )
    return f"{'yes' if same else 'NO'} (sem_seg max diff {sem:.1e})"


def stage_times(model, path, inputs, sync):
    """Seconds of the three stages of one pair: encode (both images), decode, post-process."""
    apply_path(model, path)
    with torch.no_grad():
        batch = model.prepare_inputs(inputs, with_targets=False)
        images = torch.cat([batch.tar_images, batch.ref_images])
        out = {}
        out["encode"] = C.timed(lambda: out.setdefault("feats", model.encode(images)), sync)
        feats = out.pop("feats")

        def decode():  # reference pooling + decoder, as one stage
            tokens = model.reference_tokens(select_features(feats, slice(1, None)),
                                            batch.ref_masks, batch.ref_labels, batch.ref_ids)
            return tokens, model.decode_tokens(select_features(feats, 0), tokens)

        out["decode"] = C.timed(lambda: out.setdefault("raw", decode()), sync)
        tokens, raw = out.pop("raw")
        geometry = ImageGeometry(batch.padded_size, batch.image_sizes[0], batch.output_sizes[0])
        out["post-process"] = C.timed(lambda: model.postprocess(
            raw, tokens, geometry, model.default_outputs()), sync)
    return out


# ------------------------------------------------------------------ child: peak memory
def child_main(arch, size, threads, path, device):
    torch.set_num_threads(int(threads))
    _, model = C.build_sine(model_opts(arch, int(size)), device)
    if path == "fast-compile":
        model.image_encoder.encoder.compile()
    inputs = pair_inputs(int(size))
    run = make_runner(path_model(model, path, tempfile.mkdtemp(prefix="bench_onnx")), path,
                      inputs)
    base = C.rss_mib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    run()
    out = {"peak_mib": C.peak_rss_mib(), "base_mib": base}
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / C.MIB
    print(json.dumps(out))


# ------------------------------------------------------------------ main
def bench_config(arch, size, threads_list, paths, args):
    rows = []
    _, model = C.build_sine(model_opts(arch, size), args.device)
    inputs = pair_inputs(size)
    onnx_dir = tempfile.mkdtemp(prefix="bench_onnx")
    models = {p: path_model(model, p, onnx_dir) for p in paths if p != "auto-sem"}
    if "fast-compile" in paths:
        models["fast-compile"] = copy.deepcopy(model)
        models["fast-compile"].image_encoder.encoder.compile()
    sync = args.device.startswith("cuda")
    for threads in threads_list:
        torch.set_num_threads(threads)
        if "auto-sem" in paths:  # the choice depends on the thread count
            choice = choose(model, onnx_dir)
            models["auto-sem"] = path_model(model, "auto-sem", onnx_dir, choice)
            args.choices.append((f"{arch} {size} px, {threads} thread(s): chose {choice.name}",
                                 choice.table()))
            print(f"auto-sem ({arch}, {size}, {threads} threads) chose {choice.name}:\n"
                  f"{choice.table()}", file=sys.stderr, flush=True)
        runners = {p: make_runner(models[p], p, inputs) for p in paths}
        times = C.interleaved_timings(runners, args.repeats, args.warmup, sync)
        results = {p: runners[p]() for p in paths}
        if args.breakdown:
            for p in [p for p in paths if p not in SEM_PATHS]:
                stages = stage_times(models[p], p, inputs, sync)
                args.stage_rows.append([arch, size, threads, p,
                                        *(C.fmt_s(stages[k]) for k in STAGES)])
        for p in paths:
            mem = {}
            if args.memory:  # auto-sem: the memory of the option it chose
                child_path = OPTION_PATHS[choice.name] if p == "auto-sem" else p
                mem = C.run_child(__file__, [arch, str(size), str(threads), child_path,
                                             args.device])
            base = "official" if p in SEM_PATHS else "ref"
            ratio = C.paired_ratio(times[base], times[p]) if base in paths else float("nan")
            peak = mem.get("cuda_peak_mib", mem.get("peak_mib"))
            delta = mem["peak_mib"] - mem["base_mib"] if mem and not sync else None
            rows.append([
                arch, size, threads, p, C.fmt_s(statistics.median(times[p])),
                C.fmt_s(min(times[p])), f"{ratio:.2f}x",
                f"{peak:.0f}" if peak is not None else "-",
                f"{delta:.0f}" if delta is not None else "-",
                compare_results(results[base], results[p]) if base in paths else "-",
            ])
            print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--sizes", default="518,896")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--paths", default="ref,fast",
                        help="comma list of ref, fast, fast-compile, fast-bf16, and the "
                             "semantic-only official, fast-sem, onnx-sem, int8-sem, bf16-sem, "
                             "auto-sem")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per path")
    parser.add_argument("--quick", action="store_true", help="ViT-S only")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory child processes")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time encode / decode / post-process once per path")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    args.stage_rows = []
    args.choices = []  # (title, table) of every auto-sem choice
    return args


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(*sys.argv[2:])
    args = parse_args()
    archs = ["vit_small"] if args.quick else args.archs.split(",")
    paths = args.paths.split(",")
    if "fast-bf16" in paths and not args.device.startswith("cuda"):
        raise SystemExit("fast-bf16 needs --device cuda (bf16 autocast is only applied on CUDA)")
    C.print_machine(args.device)
    print(f"command: python {' '.join([os.path.relpath(__file__, C.ROOT), *sys.argv[1:]])}\n")
    headers = ["arch", "size", "threads", "path", "median s", "min s",
               "speed-up vs ref (official for *-sem)",
               "peak MiB" if not args.device.startswith("cuda") else "CUDA peak MiB",
               "forward Δ MiB", "outputs equal"]
    rows = []
    for arch in archs:
        for size in map(int, args.sizes.split(",")):
            rows += bench_config(arch, size, list(map(int, args.threads.split(","))), paths,
                                 args)
    print(f"## Per-pair latency ({args.repeats} rounds, {args.warmup} warm-up)")
    print(C.markdown_table(headers, rows))
    if args.stage_rows:
        print("\n## Stages of one pair (seconds, one run each)")
        print(C.markdown_table(["arch", "size", "threads", "path", *STAGES], args.stage_rows))
    for title, table in args.choices:
        print(f"\n## auto-sem: {title} (median s of one synthetic pair; agreement with fp32)")
        print(table)
    C.print_load_average()


if __name__ == "__main__":
    main()
