#!/usr/bin/env python
"""The main job: train the demo SINE on the built-in synthetic data and measure what it learned.

1. generates ``datasets/synthetic`` if it is absent (deterministic, ~1 minute);
2. evaluates the randomly initialised demo model: few-shot semantic mIoU on held-out (novel)
   categories, 1-shot episodes;
3. trains it with ``train_net.py``'s Trainer on 2 CPU threads (configs/demo);
4. evaluates the trained model on the same episodes and writes ``<OUTPUT_DIR>/results.json``.

    python tools/demo_job.py [--config-file configs/demo/sine_synthetic_tiny.yaml] [KEY VALUE ...]

``--models sine,segic`` does this for each model in turn (its demo config, the same wall-time
budget ``--max-train-minutes`` and the same held-out episodes) and prints one table of both,
also written to ``output/side_by_side.json``.
"""
import argparse
import logging
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# The job works from any directory: the synthetic data lives under the repository by default.
os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(ROOT, "datasets"))

# torch, detectron2 and sine are imported by the functions that run after parsing, so that
# `--help` answers at once.

logger = logging.getLogger("sine.demo_job")


#: Demo config of each model of ``--models``.
DEMO_CONFIGS = {
    "sine": "configs/demo/sine_synthetic_tiny.yaml",
    "segic": "configs/segic/segic_synthetic_tiny.yaml",
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=None,
                        help=f"demo config (default: {DEMO_CONFIGS['sine']}); only with one model")
    parser.add_argument("--models", default=None,
                        help="comma-separated models to train and compare, of "
                        f"{sorted(DEMO_CONFIGS)} (their demo configs; default: --config-file)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-train-minutes", type=float, default=9.0,
                        help="stop training early (keeping the model) after this much wall time")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args()
    if args.models is None:
        args.config_files = {"model": args.config_file or os.path.join(ROOT, DEMO_CONFIGS["sine"])}
        return args
    if args.config_file:
        parser.error("give either --config-file or --models (each model uses its demo config)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in DEMO_CONFIGS]
    if unknown or not models:
        parser.error(f"--models: unknown {unknown}; choose from {sorted(DEMO_CONFIGS)}")
    args.config_files = {m: os.path.join(ROOT, DEMO_CONFIGS[m]) for m in models}
    return args


def build_cfg(config_file, opts):
    from sine.config import get_sine_cfg

    cfg = get_sine_cfg(config_file, opts)
    cfg.OUTPUT_DIR = os.path.join(ROOT, cfg.OUTPUT_DIR)
    cfg.freeze()
    return cfg


def evaluate(cfg, model):
    """Few-shot semantic results of ``model`` on every dataset of ``DATASETS.TEST``."""
    from detectron2.evaluation import inference_on_dataset

    from train_net import Trainer

    results = {}
    for name in cfg.DATASETS.TEST:
        loader = Trainer.build_test_loader(cfg, name)
        evaluator = Trainer.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "eval", name))
        results[name] = inference_on_dataset(model, loader, evaluator)["fss"]
    return results


def training_time_budget(minutes):
    """A hook that stops training, keeping a final checkpoint, once ``minutes`` of wall time
    have passed (raising :class:`TimeBudgetReached`).

    A safety net for slow machines: the demo must finish in about ten minutes.
    """
    from detectron2.engine import HookBase  # defined here: detectron2 is imported after parsing

    class TrainingTimeBudget(HookBase):
        def __init__(self):
            self.seconds = minutes * 60

        def before_train(self):
            self.start = time.perf_counter()

        def after_step(self):
            last = self.trainer.iter + 1 >= self.trainer.max_iter
            if not last and time.perf_counter() - self.start > self.seconds:
                logger.warning(f"time budget reached after {self.trainer.iter + 1} iterations")
                self.trainer.checkpointer.save("model_final", iteration=self.trainer.iter)
                raise TimeBudgetReached

    return TrainingTimeBudget()


class TimeBudgetReached(Exception):
    pass


def main():
    args = parse_args()
    import torch
    from detectron2.utils.logger import setup_logger

    from sine.data.datasets.common import datasets_root
    from sine.data.datasets.register_synthetic import register_synthetic
    from sine.data.synthetic import generate_synthetic
    from sine.utils.io import atomic_write_json

    torch.set_num_threads(args.threads)
    setup_logger(name="sine")
    setup_logger(name="detectron2")
    # Generates the default tree once (about 20 s); later runs find it complete and skip.
    generate_synthetic(datasets_root(), seed=0, progress=True)
    register_synthetic(datasets_root())
    all_results = {}
    for model, config_file in args.config_files.items():
        all_results[model] = train_and_evaluate(config_file, args)
        print_table(all_results[model])
    if len(all_results) > 1:
        atomic_write_json(os.path.join(ROOT, "output", "side_by_side.json"), all_results)
        print_side_by_side(all_results)


def train_and_evaluate(config_file, args):
    """Untrained and trained FSS results of one demo config, written to its results.json."""
    cfg = build_cfg(config_file, args.opts)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils.env import seed_all_rng

    from sine.utils.io import atomic_write_json
    from train_net import Trainer

    # The trainer's fresh model is the untrained baseline.
    # Evaluation is done here, before and after, not by the trainer's own end-of-training hook.
    train_cfg = cfg.clone()
    train_cfg.defrost()
    train_cfg.DATASETS.TEST = ()
    train_cfg.freeze()
    seed_all_rng(cfg.SEED)  # the same untrained model (and data order) on every run
    trainer = Trainer(train_cfg)
    trainer.register_hooks([training_time_budget(args.max_train_minutes)])
    untrained = evaluate(cfg, trainer.model)
    start = time.perf_counter()
    trainer.resume_or_load(resume=False)
    try:
        trainer.train()
    except TimeBudgetReached:
        pass
    train_minutes = (time.perf_counter() - start) / 60
    DetectionCheckpointer(trainer.model).load(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    trained = evaluate(cfg, trainer.model)

    name = cfg.DATASETS.TEST[0]
    results = {
        "fss_miou_novel": {"trained": trained[name]["mIoU"], "untrained": untrained[name]["mIoU"]},
        "fss_fbiou_novel": {
            "trained": trained[name]["FB-IoU"],
            "untrained": untrained[name]["FB-IoU"],
        },
        "episodes": name,
        "train_iterations": trainer.iter + 1,
        "train_minutes": round(train_minutes, 2),
        "threads": args.threads,
        "max_train_minutes": args.max_train_minutes,
        "config": os.path.relpath(config_file, ROOT),
        "model": cfg.MODEL.META_ARCHITECTURE,
    }
    atomic_write_json(os.path.join(cfg.OUTPUT_DIR, "results.json"), results)
    return results


def print_table(results):
    rows = [("fss_miou_novel", results["fss_miou_novel"]), ("fss_fbiou_novel",
            results["fss_fbiou_novel"])]
    print(f"\n{'metric (1-shot, novel classes)':<32}{'untrained':>12}{'trained':>12}")
    for key, r in rows:
        print(f"{key:<32}{r['untrained']:>12.2f}{r['trained']:>12.2f}")
    print(f"trained {results['train_iterations']} iterations in {results['train_minutes']} min")


def print_side_by_side(all_results):
    """One row per model: held-out FSS before / after training under the same time budget."""
    first = next(iter(all_results.values()))
    print(f"\n1-shot FSS on held-out categories ({first['episodes']}), "
          f"training budget {first['max_train_minutes']} min, {first['threads']} thread(s)")
    print(f"{'model':<8}{'mIoU untrained':>16}{'mIoU trained':>14}{'FB-IoU trained':>16}"
          f"{'iterations':>12}{'minutes':>9}")
    for r in all_results.values():
        print(f"{r['model']:<8}{r['fss_miou_novel']['untrained']:>16.2f}"
              f"{r['fss_miou_novel']['trained']:>14.2f}{r['fss_fbiou_novel']['trained']:>16.2f}"
              f"{r['train_iterations']:>12}{r['train_minutes']:>9}")


if __name__ == "__main__":
    main()
