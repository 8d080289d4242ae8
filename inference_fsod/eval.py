#!/usr/bin/env python
"""Few-shot instance segmentation / detection evaluation (COCO-NOVEL, COCO2VOC; spec §7.2).

    python -m inference_fsod.eval --config-file configs/fsod/coco_1shot.yaml \
        --output output/fsod MODEL.WEIGHTS models/pytorch_model.bin
    python -m inference_fsod.eval --config-file ... --benchmark voc --shots 5 --seeds 0-9 ...
    python -m inference_fsod.eval --config-file ... --num-gpus 8 ...

(``python inference_fsod/eval.py ...`` works as well, from any directory.)

For every seed: the reference set's class prototypes are computed once and cached
(``<output>/prototypes``), every test image is decoded with them, and detectron2's
``COCOEvaluator`` scores bbox and segm AP on the novel classes. Per-seed metrics go to
``<output>/<benchmark>_<K>shot/seed<s>/metrics.json``; a rerun skips finished seeds. The mean and
standard deviation over the seeds are printed and written to ``summary.json``.
"""
import argparse
import logging
import os
from typing import TYPE_CHECKING

# Only light modules at import time: `--help` must not wait for torch / detectron2, which the
# functions below import when they run.
from inference_fsod import BENCHMARK_NAMES
from sine.utils.cli import add_launch_args

if TYPE_CHECKING:
    from sine.evaluation.resume import RunRecords

logger = logging.getLogger("inference_fsod")


def parse_seeds(text):
    """"0-9" / "0,3,5" / "2" / "0-2,7" -> sorted list of ints."""
    seeds = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                seeds.update(range(lo, hi + 1))
            else:
                seeds.add(int(part))
        except ValueError:
            raise ValueError(f"bad --seeds value {text!r}: use e.g. 0-9, 0,3,5 or 2") from None
    if not seeds:
        raise ValueError(f"--seeds {text!r} selects no seed")
    return sorted(seeds)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--benchmark", choices=sorted(BENCHMARK_NAMES),
                        help="default: TEST.FSOD.BENCHMARK of the config")
    parser.add_argument("--shots", type=int, help="K; default: TEST.FSOD.SHOTS")
    parser.add_argument("--seeds", help="e.g. 0-9; default: TEST.FSOD.SEEDS")
    parser.add_argument("--output", help="output folder; default: OUTPUT_DIR of the config")
    parser.add_argument("--prototype-cache", metavar="DIR",
                        help="prototype cache folder; default: <output>/prototypes")
    add_launch_args(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides, e.g. MODEL.WEIGHTS path/to/sine.pth")
    return parser


def setup_cfg(args):
    """The frozen config of this run (with logging to its OUTPUT_DIR)."""
    from sine.evaluation.suite_setup import setup_suite

    cfg = setup_suite(args.config_file, args.opts, "inference_fsod", overrides={
        "TEST.FSOD.BENCHMARK": args.benchmark,
        "TEST.FSOD.SHOTS": args.shots or None,
        "TEST.FSOD.SEEDS": None if args.seeds is None else parse_seeds(args.seeds),
        "OUTPUT_DIR": args.output,
    })
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("FSOD evaluation needs trained weights: add MODEL.WEIGHTS "
                         "path/to/sine.pth")
    return cfg


class FSODRun:
    """One benchmark x K evaluation over several seeds, sharing the model and the test set."""

    def __init__(self, cfg, cache_dir):
        from sine.utils.throughput import Throughput

        self.cfg = cfg
        self.fsod = cfg.TEST.FSOD
        self.cache_dir = cache_dir
        self.run_dir = os.path.join(cfg.OUTPUT_DIR, f"{self.fsod.BENCHMARK}_{self.fsod.SHOTS}shot")
        self._model = None
        self._test_records = None
        self.throughput = Throughput("images")  # test images decoded in this run

    def model(self):
        """The model, built on first use (only if some seed has to run)."""
        if self._model is None:
            from sine.engine.predictor import build_in_context_model

            self._model = build_in_context_model(self.cfg)
        return self._model

    def metrics_path(self, seed):
        return os.path.join(self.run_dir, f"seed{seed}", "metrics.json")

    def records(self, seed) -> "RunRecords":
        """Resume records of one seed: tied to the weights, model config and reference set;
        a seed evaluated with other ones is evaluated again."""
        from inference_fsod.prototype_cache import prototype_cache_key
        from inference_fsod.register_fsod import dataset_names
        from sine.evaluation.resume import RunRecords

        ref_name, test_name = dataset_names(self.fsod.BENCHMARK, self.fsod.SHOTS, seed)
        settings = {"benchmark": self.fsod.BENCHMARK, "shots": self.fsod.SHOTS, "seed": seed,
                    "test": test_name, "prototype_key": prototype_cache_key(self.cfg, ref_name)}
        return RunRecords(settings, on_mismatch="redo")

    def evaluate_seed(self, seed):
        """Prototypes (cached), inference on every test image and COCO evaluation of one seed."""
        from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
        from detectron2.evaluation import inference_on_dataset
        from detectron2.utils import comm
        from tqdm import tqdm

        from inference_fsod.data import FSODTestMapper
        from inference_fsod.evaluation import NovelClassCOCOEvaluator
        from inference_fsod.model import PrototypeInstanceSegmenter
        from inference_fsod.prototype_cache import load_or_compute_prototypes
        from inference_fsod.register_fsod import dataset_names

        ref_name, test_name = dataset_names(self.fsod.BENCHMARK, self.fsod.SHOTS, seed)
        if self._test_records is None:
            self._test_records = DatasetCatalog.get(test_name)  # also completes its metadata
        ref_classes = MetadataCatalog.get(ref_name).thing_classes
        if ref_classes != MetadataCatalog.get(test_name).thing_classes:
            raise ValueError(f"'{ref_name}' and '{test_name}' have different class lists")
        tokens = load_or_compute_prototypes(
            self.model, self.cfg, ref_name, self.cache_dir, self.fsod.REF_BATCH_SIZE
        )
        loader = build_detection_test_loader(
            self._test_records,
            mapper=FSODTestMapper(self.cfg.MODEL.SINE.PAD_SIZE, self.cfg.INPUT.FORMAT),
            num_workers=self.cfg.DATALOADER.NUM_WORKERS,
        )
        seed_dir = os.path.dirname(self.metrics_path(seed))
        evaluator = NovelClassCOCOEvaluator(test_name, output_dir=seed_dir)
        model = PrototypeInstanceSegmenter(self.model(), tokens)
        progress = tqdm(loader, desc=f"seed {seed}", disable=not comm.is_main_process(),
                        dynamic_ncols=True)
        with self.throughput.measure():
            results = inference_on_dataset(model, progress, evaluator)
        self.throughput.add(len(self._test_records))
        if comm.is_main_process():
            self.records(seed).save(self.metrics_path(seed), {
                "references": ref_name,
                "results": {task: results[task] for task in ("bbox", "segm")},
            })
        return results

    def run(self, seeds):
        from detectron2.data import DatasetCatalog

        from inference_fsod.register_fsod import dataset_names

        per_seed = {}
        for seed in seeds:
            ref_name, _ = dataset_names(self.fsod.BENCHMARK, self.fsod.SHOTS, seed)
            if ref_name not in DatasetCatalog.list():
                raise KeyError(f"reference set '{ref_name}' is not registered (seed {seed}, "
                               f"{self.fsod.SHOTS} shots); see inference_fsod/README.md")
            done = self.records(seed).load(self.metrics_path(seed))
            if done is not None:
                done = done["results"]
                logger.info("Seed %d already evaluated (%s); skipping", seed,
                            self.metrics_path(seed))
            else:
                logger.info("Evaluating %s, %d shots, seed %d", self.fsod.BENCHMARK,
                            self.fsod.SHOTS, seed)
                done = self.evaluate_seed(seed)
            per_seed[seed] = done
        return per_seed


def main(args):
    import torch
    from detectron2.utils import comm

    from inference_fsod.evaluation import summarize_seeds, summary_table
    from inference_fsod.register_fsod import register_all_fsod
    from sine.data.datasets.common import datasets_root
    from sine.utils.io import atomic_write_json

    cfg = setup_cfg(args)
    # Registered again for the current $DETECTRON2_DATASETS (e.g. a freshly generated tree).
    register_all_fsod(datasets_root())
    cache_dir = args.prototype_cache or os.path.join(cfg.OUTPUT_DIR, "prototypes")
    seeds = list(cfg.TEST.FSOD.SEEDS)
    fsod_run = FSODRun(cfg, cache_dir)
    with torch.no_grad():
        per_seed = fsod_run.run(seeds)
    if not comm.is_main_process():
        return None
    summary = summarize_seeds(per_seed)
    title = (f"{cfg.TEST.FSOD.BENCHMARK}, {cfg.TEST.FSOD.SHOTS}-shot, novel classes, "
             f"mean ± std over seeds {seeds}:")
    table = summary_table(summary, title)
    atomic_write_json(os.path.join(fsod_run.run_dir, "summary.json"), {
        "benchmark": cfg.TEST.FSOD.BENCHMARK, "shots": cfg.TEST.FSOD.SHOTS, "seeds": seeds,
        "summary": summary, "per_seed": {str(s): r for s, r in per_seed.items()},
    })
    print(table)
    print(fsod_run.throughput)
    return summary


def main_cli(argv=None):
    """The command line: parse ``argv`` and run :func:`main` in ``--num-gpus`` processes."""
    args = get_parser().parse_args(argv)
    from detectron2.engine import launch

    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    main_cli()
