#!/usr/bin/env python
"""Few-shot semantic segmentation evaluation of SINE (spec §7.1): mIoU and FB-IoU per fold.

    python inference_fss/eval.py --config-file configs/fss/coco20i_1shot.yaml --benchmark coco \\
        --folds all --output output/fss/coco20i_1shot MODEL.WEIGHTS models/pytorch_model.bin

Every episode resizes its query and K supports to TEST.FSS.IMAGE_SIZE (518), pads them to
MODEL.SINE.PAD_SIZE (896) and labels every support mask with the episode's class, so the
"instance" reference pooling builds one prototype jointly over the K shots. The semantic map is
thresholded at MODEL.SINE.TEST.SEM_SEG_THRESH (0.7) by ``FSSEvaluator``.

Interrupted runs resume: each fold keeps its per-episode intersection/union counts in
``<output>/<dataset>/episodes.json`` (written atomically every ``--checkpoint-period`` episodes
and when the run stops); a rerun with the same settings computes only the missing episodes,
and folds with a ``results.json`` are skipped.
"""
import argparse
import functools
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from tqdm import tqdm  # noqa: E402

from inference_fss.benchmarks import BENCHMARKS, register_fss_benchmark  # noqa: E402
from sine.config import get_sine_cfg  # noqa: E402
from sine.data.datasets.common import datasets_root  # noqa: E402
from sine.data.fss_episodes import (  # noqa: E402
    SYNTHETIC_FSS_EPISODES,
    FSSEpisodeMapper,
    register_synthetic_fss_episodes,
)
from sine.engine.predictor import build_in_context_model  # noqa: E402
from sine.evaluation.fss_evaluation import FSSEvaluator, episode_intersection_union  # noqa: E402
from sine.utils.io import atomic_write, atomic_write_json  # noqa: E402

logger = logging.getLogger("inference_fss.eval")

BENCHMARK_CHOICES = sorted(BENCHMARKS) + ["synthetic"]


class EpisodeFSSEvaluator(FSSEvaluator):
    """``FSSEvaluator`` that also keeps every episode's counts, so a run can be saved and resumed.

    ``episodes``: episode id -> (class id, intersection (2,), union (2,)), index 0 = background.
    """

    def reset(self):
        super().reset()
        self.episodes = {}

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs, strict=True):
            pred = self._binary_prediction(inp, out)
            inter, union = episode_intersection_union(pred, inp["sem_seg_gt"], self._ignore_label)
            self.add_episode(inp["episode_id"], inp["class_id"], inter, union)

    def add_episode(self, episode_id, class_id, inter, union):
        episode_id, class_id = int(episode_id), int(class_id)
        if episode_id in self.episodes:
            raise ValueError(f"episode {episode_id} was already evaluated")
        inter, union = np.asarray(inter, np.int64), np.asarray(union, np.int64)
        self.episodes[episode_id] = (class_id, inter, union)
        if class_id in self._totals:
            old = self._totals[class_id]
            self._totals[class_id] = (old[0] + inter, old[1] + union)
        else:
            self._totals[class_id] = (inter.copy(), union.copy())

    def state(self):
        """JSON-able ``{episode id: [class id, [inter bg, fg], [union bg, fg]]}``."""
        return {str(e): [c, i.tolist(), u.tolist()]
                for e, (c, i, u) in sorted(self.episodes.items())}

    def load_state(self, state):
        for episode_id, (class_id, inter, union) in state.items():
            self.add_episode(episode_id, class_id, inter, union)


# ----------------------------------------------------------------------------- setup
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="SINE few-shot semantic segmentation evaluation")
    parser.add_argument("--config-file", required=True, help="e.g. configs/fss/coco20i_1shot.yaml")
    parser.add_argument("--benchmark", required=True, choices=BENCHMARK_CHOICES)
    parser.add_argument("--fold", type=int, default=0, help="fold to evaluate")
    parser.add_argument("--folds", default=None,
                        help="'all' or comma-separated folds; overrides --fold")
    parser.add_argument("--shot", type=int, default=None, help="K (default: TEST.FSS.SHOTS)")
    parser.add_argument("--num-episodes", type=int, default=None,
                        help="episodes per fold (default: the official count; synthetic: 200)")
    parser.add_argument("--seed", type=int, default=None,
                        help="episode seed (default: TEST.FSS.SEED)")
    parser.add_argument("--output", required=True, help="folder of the results and checkpoints")
    parser.add_argument("--checkpoint-period", type=int, default=50,
                        help="save the per-episode counts every N episodes")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def setup_cfg(args):
    cfg = get_sine_cfg(args.config_file, args.opts)
    if args.shot is not None:
        cfg.TEST.FSS.SHOTS = args.shot
    if args.seed is not None:
        cfg.TEST.FSS.SEED = args.seed
    cfg.freeze()
    return cfg


def parse_folds(args):
    num_folds = 1 if args.benchmark == "synthetic" else BENCHMARKS[args.benchmark].num_folds
    if args.folds is None:
        folds = [args.fold]
    elif args.folds == "all":
        folds = list(range(num_folds))
    else:
        folds = [int(f) for f in args.folds.split(",")]
    bad = [f for f in folds if not 0 <= f < num_folds]
    if bad:
        raise ValueError(f"{args.benchmark} has folds 0..{num_folds - 1}; got {bad}")
    return folds


def register_folds(args, cfg):
    """(Re-)register the folds to evaluate with this run's episode count and seed.

    Returns [(fold, dataset name)]. Data is read from ``$DETECTRON2_DATASETS`` as of now.
    """
    shots, seed = cfg.TEST.FSS.SHOTS, cfg.TEST.FSS.SEED
    if args.benchmark == "synthetic":
        from sine.data.datasets.register_synthetic import register_synthetic

        register_synthetic(datasets_root())
        num = SYNTHETIC_FSS_EPISODES if args.num_episodes is None else args.num_episodes
        return [(0, register_synthetic_fss_episodes(num, seed, shots=(shots,))[0])]
    return [
        (f, register_fss_benchmark(args.benchmark, f, shots, num_episodes=args.num_episodes,
                                   seed=seed))
        for f in parse_folds(args)
    ]


# ----------------------------------------------------------------------------- one fold
def run_settings(cfg, name):
    """What must match for saved episode counts to be reused."""
    meta = MetadataCatalog.get(name)
    weights = os.path.abspath(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else ""
    return {
        "dataset": name, "shots": meta.shots, "seed": meta.seed,
        "num_episodes": meta.get("num_episodes", None), "weights": weights,
        "threshold": cfg.MODEL.SINE.TEST.SEM_SEG_THRESH, "image_size": cfg.TEST.FSS.IMAGE_SIZE,
        "pad_size": cfg.MODEL.SINE.PAD_SIZE,
    }


def _load_matching(path, settings):
    """The JSON at ``path`` if it exists; it must have been written with ``settings``."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    diff = {k: (saved["settings"].get(k), v) for k, v in settings.items()
            if saved["settings"].get(k) != v}
    if diff:
        changes = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items())
        raise ValueError(
            f"{path} was written by a run with other settings ({changes}); use another --output "
            "or delete that folder to start over"
        )
    return saved


def evaluate_fold(cfg, get_model, name, fold_dir, checkpoint_period=50, on_episode=None):
    """Evaluate (or finish evaluating) the episodes of dataset ``name``.

    Args:
        get_model: zero-argument callable returning the model; called only once the
            episodes have been read (missing data fails before a large model is built) and
            some episode remains to be computed.
        on_episode: optional ``(dataset name, episode id) -> None`` called after each episode.
    Returns:
        dict with "settings", "episodes" (count), "scores" (mIoU, FB-IoU, IoU-<class>).
    """
    settings = run_settings(cfg, name)
    results_path = os.path.join(fold_dir, "results.json")
    finished = _load_matching(results_path, settings)
    if finished is not None:
        logger.info("%s: already evaluated (%s), skipped", name, results_path)
        return finished
    episodes = DatasetCatalog.get(name)
    evaluator = EpisodeFSSEvaluator(name, threshold=settings["threshold"], distributed=False)
    progress_path = os.path.join(fold_dir, "episodes.json")
    saved = _load_matching(progress_path, settings)
    if saved is not None:
        evaluator.load_state(saved["episodes"])
        logger.info("%s: resuming, %d of %d episodes done", name, len(evaluator.episodes),
                    len(episodes))
    todo = [e for e in episodes if e["episode_id"] not in evaluator.episodes]

    def save():  # compact: one line per episode would make LVIS' 2300 episodes a long file
        with atomic_write(progress_path) as f:
            json.dump({"settings": settings, "episodes": evaluator.state()}, f)

    try:
        _run_episodes(cfg, get_model, todo, evaluator, save, checkpoint_period, on_episode, name,
                      len(episodes))
    finally:
        if evaluator.episodes:
            save()
    scores = evaluator.evaluate()["fss"]
    result = {"settings": settings, "episodes": len(evaluator.episodes), "scores": scores}
    atomic_write_json(results_path, result)
    return result


def _run_episodes(cfg, get_model, todo, evaluator, save, period, on_episode, name, total):
    if not todo:
        return
    model = get_model()
    loader = build_detection_test_loader(todo, mapper=FSSEpisodeMapper(cfg),
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
    with torch.no_grad(), tqdm(total=total, initial=total - len(todo), desc=name,
                               dynamic_ncols=True) as bar:
        for i, batch in enumerate(loader, 1):
            # Only the semantic map is evaluated; other outputs would only cost post-processing.
            evaluator.process(batch, model.segment_batch(batch, outputs={"sem_seg"}))
            bar.update(len(batch))
            if i % period == 0:
                save()
            if on_episode is not None:
                for inp in batch:
                    on_episode(name, inp["episode_id"])


# ----------------------------------------------------------------------------- report
def summarize(fold_results):
    """{fold: result} -> per-fold rows and their mean over folds."""
    folds = {
        str(f): {"dataset": r["settings"]["dataset"], "mIoU": r["scores"]["mIoU"],
                 "FB-IoU": r["scores"]["FB-IoU"], "episodes": r["episodes"]}
        for f, r in fold_results.items()
    }
    mean = {k: float(np.mean([row[k] for row in folds.values()])) for k in ("mIoU", "FB-IoU")}
    return folds, mean


def format_table(title, folds, mean):
    lines = [title, f"{'fold':<6}{'mIoU':>8}{'FB-IoU':>9}{'episodes':>10}"]
    for f, row in folds.items():
        lines.append(f"{f:<6}{row['mIoU']:>8.2f}{row['FB-IoU']:>9.2f}{row['episodes']:>10d}")
    lines.append(f"{'mean':<6}{mean['mIoU']:>8.2f}{mean['FB-IoU']:>9.2f}")
    return "\n".join(lines)


def main(argv=None, on_episode=None):
    """Run the CLI; returns the summary written to ``<output>/fss_<benchmark>_<K>shot.json``."""
    args = parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    for name in ("sine", "inference_fss"):
        setup_logger(output=args.output, name=name)
    cfg = setup_cfg(args)
    names = register_folds(args, cfg)
    get_model = functools.cache(lambda: build_in_context_model(cfg))
    fold_results = {}
    for fold, name in names:
        fold_dir = os.path.join(args.output, name)
        fold_results[fold] = evaluate_fold(cfg, get_model, name, fold_dir,
                                           args.checkpoint_period, on_episode)
    folds, mean = summarize(fold_results)
    shots = cfg.TEST.FSS.SHOTS
    summary = {
        "benchmark": args.benchmark, "shots": shots, "seed": cfg.TEST.FSS.SEED,
        "config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS,
        "threshold": cfg.MODEL.SINE.TEST.SEM_SEG_THRESH, "folds": folds, "mean": mean,
    }
    atomic_write_json(os.path.join(args.output, f"fss_{args.benchmark}_{shots}shot.json"), summary)
    title = f"FSS {args.benchmark} {shots}-shot (seed {cfg.TEST.FSS.SEED})"
    print(format_table(title, folds, mean))
    return summary


if __name__ == "__main__":
    main()
