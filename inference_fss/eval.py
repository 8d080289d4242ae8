#!/usr/bin/env python
"""Few-shot semantic segmentation evaluation (spec §7.1): mIoU and FB-IoU per fold.

    python -m inference_fss.eval --config-file configs/fss/coco20i_1shot.yaml --benchmark coco \\
        --folds all --output output/fss/coco20i_1shot MODEL.WEIGHTS models/pytorch_model.bin

Every episode resizes its query and K supports to TEST.FSS.IMAGE_SIZE (518), pads them to
MODEL.SINE.PAD_SIZE (896) and labels every support mask with the episode's class, so the
"instance" reference pooling builds one prototype jointly over the K shots. The semantic map is
thresholded at MODEL.SINE.TEST.SEM_SEG_THRESH (0.7) by ``FSSEvaluator``.

(``python inference_fss/eval.py ...`` works as well, from any directory.) The model is any
in-context model of the package, used through its surface (``segment_batch`` asking only for
"sem_seg").

Interrupted runs resume (``sine.evaluation.resume``): each fold keeps its per-episode
intersection/union counts in ``<output>/<dataset>/episodes.json`` (written atomically every
``--checkpoint-period`` episodes and when the run stops); a rerun with the same settings
computes only the missing episodes, and folds with a ``results.json`` are skipped.
"""
import argparse
import functools
import glob
import json
import logging
import os

# Only light modules at import time: `--help` must not wait for torch / detectron2, which the
# functions below import when they run.
from inference_fss import BENCHMARK_NAMES
from sine.utils.cli import add_launch_args

logger = logging.getLogger("inference_fss.eval")

BENCHMARK_CHOICES = sorted(BENCHMARK_NAMES) + ["synthetic"]


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
    parser.add_argument("--dump-episodes", metavar="FILE", default=None,
                        help="write the episodes of the selected folds (JSON: class id, query "
                             "and support files) to FILE and exit without evaluating")
    add_launch_args(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def setup_cfg(args):
    """The frozen config of this run (with logging to ``--output``)."""
    from sine.evaluation.suite_setup import setup_suite

    return setup_suite(args.config_file, args.opts, "inference_fss", output_dir=args.output,
                       overrides={"TEST.FSS.SHOTS": args.shot, "TEST.FSS.SEED": args.seed})


def parse_folds(args):
    from inference_fss.benchmarks import BENCHMARKS

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
    from inference_fss.benchmarks import register_fss_benchmark
    from sine.data.datasets.common import datasets_root
    from sine.data.fss_episodes import SYNTHETIC_FSS_EPISODES, register_synthetic_fss_episodes

    shots, seed = cfg.TEST.FSS.SHOTS, cfg.TEST.FSS.SEED
    if args.benchmark == "synthetic":
        from sine.data.datasets.register_synthetic import register_synthetic

        register_synthetic(datasets_root())
        num = SYNTHETIC_FSS_EPISODES if args.num_episodes is None else args.num_episodes
        return [(0, register_synthetic_fss_episodes(num, seed, shots=(shots,),
                                                    sampler=cfg.TEST.FSS.SAMPLER)[0])]
    return [
        (f, register_fss_benchmark(args.benchmark, f, shots, num_episodes=args.num_episodes,
                                   seed=seed, sampler=cfg.TEST.FSS.SAMPLER))
        for f in parse_folds(args)
    ]


def text_prompt(cfg) -> str:
    """The text a model reads with each support, reported with the scores: "class name"
    (SegIC's official one-shot evaluation), "task description" (SegIC without class names),
    "empty prompt" (SegIC's --no_text_eval) or "none" (no text slot, or a model without text)."""
    if cfg.MODEL.META_ARCHITECTURE != "SegIC":
        return "none"
    segic = cfg.MODEL.SEGIC
    if segic.USE_TEXT:
        return "class name" if cfg.TEST.FSS.CLASS_NAMES else "task description"
    return "empty prompt" if segic.TEXT_ENCODER.EMPTY_PROMPT_EMBEDDING else "none"


def summary_file(cfg, benchmark, shots) -> str:
    """``fss_<benchmark>_<K>shot.json``; SegIC runs without the class-name prompt get a
    ``_text-<condition>`` suffix, so both conditions are kept side by side."""
    suffix = ""
    if cfg.MODEL.META_ARCHITECTURE == "SegIC" and text_prompt(cfg) != "class name":
        suffix = "_text-" + text_prompt(cfg).replace(" ", "-")
    return f"fss_{benchmark}_{shots}shot{suffix}.json"


# ----------------------------------------------------------------------------- one fold
def run_settings(cfg, name):
    """What must match for saved episode counts to be reused."""
    from detectron2.data import MetadataCatalog

    from sine.evaluation.resume import model_identity

    meta = MetadataCatalog.get(name)
    return {
        "dataset": name, "shots": meta.shots, "seed": meta.seed, "sampler": meta.sampler,
        "num_episodes": meta.get("num_episodes", None),
        "threshold": cfg.MODEL.SINE.TEST.SEM_SEG_THRESH, "image_size": cfg.TEST.FSS.IMAGE_SIZE,
        **model_identity(cfg), "text_prompt": text_prompt(cfg),
        "class_names": cfg.TEST.FSS.CLASS_NAMES,
    }


def evaluate_fold(cfg, get_model, name, fold_dir, checkpoint_period=50, on_episode=None,
                  throughput=None):
    """Evaluate (or finish evaluating) the episodes of dataset ``name``.

    Args:
        get_model: zero-argument callable returning the model; called only once the
            episodes have been read (missing data fails before a large model is built) and
            some episode remains to be computed.
        on_episode: optional ``(dataset name, episode id) -> None`` called after each episode.
        throughput: optional :class:`Throughput` counting the episodes computed and their time.

    In a multi-process run every process draws the same episodes; those not done yet are
    sharded over the processes (detectron2's ``InferenceSampler``), each process saves its own
    progress file (``episodes.json`` for the main one, ``episodes.rank<r>.json``), and the main
    process gathers every episode's counts and scores the fold. A rerun, with any number of
    processes, skips the episodes of every progress file.

    Returns:
        dict with "settings", "episodes" (count), "scores" (mIoU, FB-IoU, IoU-<class>); None on
        the processes other than the main one.
    """
    from detectron2.data import DatasetCatalog
    from detectron2.utils import comm

    from sine.evaluation.fss_evaluation import FSSEvaluator
    from sine.evaluation.resume import RunRecords
    from sine.evaluation.suite_setup import gather_to_main
    from sine.utils.throughput import Throughput

    records = RunRecords(run_settings(cfg, name), on_mismatch="error")
    results_path = os.path.join(fold_dir, "results.json")
    finished = records.load(results_path)
    if finished is not None:
        logger.info("%s: already evaluated (%s), skipped", name, results_path)
        return finished
    episodes = DatasetCatalog.get(name)
    rank = comm.get_rank()
    threshold = cfg.MODEL.SINE.TEST.SEM_SEG_THRESH
    done = FSSEvaluator(name, threshold=threshold, distributed=False)  # every saved episode
    for path in sorted(glob.glob(os.path.join(fold_dir, "episodes*.json"))):
        saved = records.load(path)
        if saved is not None:
            _merge_state(done, saved["episodes"])
    if done.num_episodes:
        logger.info("%s: resuming, %d of %d episodes done", name, done.num_episodes,
                    len(episodes))
    evaluator = FSSEvaluator(name, threshold=threshold, distributed=False)  # this process's
    progress_path = os.path.join(fold_dir, "episodes.json" if rank == 0
                                 else f"episodes.rank{rank}.json")
    own = records.load(progress_path)
    if own is not None:
        evaluator.load_state(own["episodes"])
    todo = [e for e in episodes if not done.has_episode(e["episode_id"])]
    # Every process must shard the same ``todo``: none may write its progress file before all
    # have read them (a fast process's finished shard would read as "done" to a slower one,
    # whose shard of the rest would then leave episodes to nobody).
    comm.synchronize()

    def save():  # compact: one line per episode would make LVIS' 2300 episodes a long file
        records.save(progress_path, {"episodes": evaluator.state()}, compact=True)

    try:
        _run_episodes(cfg, get_model, todo, evaluator, save, checkpoint_period, on_episode, name,
                      len(episodes), throughput or Throughput("episodes"))
    finally:
        if evaluator.num_episodes:
            save()
    states = gather_to_main(evaluator.state())
    if states is None:
        comm.synchronize()  # until the main process has written results.json
        return None
    for state in states:
        _merge_state(done, state)
    result = {"episodes": done.num_episodes, "scores": done.evaluate()["fss"]}
    records.save(results_path, result)
    comm.synchronize()
    return {"settings": records.settings, **result}


def _merge_state(evaluator, state):
    """Add the episodes of ``state`` (:meth:`FSSEvaluator.state`) that ``evaluator`` lacks."""
    for episode_id, (class_id, inter, union) in state.items():
        if not evaluator.has_episode(episode_id):
            evaluator.add_episode(episode_id, class_id, inter, union)


def _run_episodes(cfg, get_model, todo, evaluator, save, period, on_episode, name, total,
                  throughput):
    import torch
    from detectron2.data import build_detection_test_loader
    from detectron2.utils import comm
    from tqdm import tqdm

    from sine.data.fss_episodes import FSSEpisodeMapper

    if not todo:
        return
    model = get_model()
    # In a multi-process run the loader's InferenceSampler gives each process its shard.
    loader = build_detection_test_loader(todo, mapper=FSSEpisodeMapper(cfg),
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
    if comm.get_world_size() > 1:  # the main process's shard
        bar = tqdm(total=len(loader), desc=f"{name} (process 0 of {comm.get_world_size()})",
                   dynamic_ncols=True, disable=not comm.is_main_process())
    else:
        bar = tqdm(total=total, initial=total - len(todo), desc=name, dynamic_ncols=True)
    with torch.no_grad(), bar, throughput.measure():
        for i, batch in enumerate(loader, 1):
            # Only the semantic map is evaluated; other outputs would only cost post-processing.
            evaluator.process(batch, model.segment_batch(batch, outputs={"sem_seg"}))
            bar.update(len(batch))
            throughput.add(len(batch))
            if i % period == 0:
                save()
            if on_episode is not None:
                for inp in batch:
                    on_episode(name, inp["episode_id"])


# ----------------------------------------------------------------------------- report
def summarize(fold_results):
    """{fold: result} -> per-fold rows and their mean over folds."""
    import numpy as np

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
    """Run the CLI; returns the summary written to ``<output>/fss_<benchmark>_<K>shot.json``.

    With ``--num-gpus`` / ``--num-machines`` the evaluation runs in several processes
    (``on_episode`` is then not called); the summary is read back from its file.
    """
    args = parse_args(argv)
    from sine.evaluation.suite_setup import launch_suite

    if args.dump_episodes is None and launch_suite(run, args):
        if args.machine_rank != 0:
            return None
        with open(summary_path(args)) as f:
            return json.load(f)
    return run(args, on_episode)


def summary_path(args):
    """Where :func:`run` writes the summary."""
    from sine.config import get_sine_cfg
    from sine.evaluation.suite_setup import resolve_config_file

    shots = args.shot
    if shots is None:
        shots = get_sine_cfg(resolve_config_file(args.config_file), args.opts).TEST.FSS.SHOTS
    return os.path.join(args.output, f"fss_{args.benchmark}_{shots}shot.json")


def run(args, on_episode=None):
    """The evaluation in one process (of possibly several); the summary on the main one."""
    from sine.data.fss_episodes import dump_episodes
    from sine.engine.predictor import build_in_context_model
    from sine.evaluation.suite_setup import gather_to_main
    from sine.utils.io import atomic_write_json
    from sine.utils.throughput import Throughput

    cfg = setup_cfg(args)
    names = register_folds(args, cfg)
    if args.dump_episodes:
        dump_episodes([name for _, name in names], args.dump_episodes)
        print(f"episodes of {', '.join(n for _, n in names)} written to {args.dump_episodes}")
        return None
    get_model = functools.cache(lambda: build_in_context_model(cfg))
    fold_results = {}
    throughput = Throughput("episodes")
    for fold, name in names:
        fold_dir = os.path.join(args.output, name)
        fold_results[fold] = evaluate_fold(cfg, get_model, name, fold_dir,
                                           args.checkpoint_period, on_episode, throughput)
    counts = gather_to_main((throughput.count, throughput.seconds))
    if counts is None:
        return None
    # Processes run side by side: all their episodes over the longest one's time.
    throughput = Throughput("episodes", sum(c for c, _ in counts), max(s for _, s in counts))
    folds, mean = summarize(fold_results)
    shots = cfg.TEST.FSS.SHOTS
    summary = {
        "benchmark": args.benchmark, "shots": shots, "seed": cfg.TEST.FSS.SEED,
        "sampler": cfg.TEST.FSS.SAMPLER, "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS, "threshold": cfg.MODEL.SINE.TEST.SEM_SEG_THRESH,
        "text_prompt": text_prompt(cfg), "folds": folds, "mean": mean,
    }
    summary["throughput"] = throughput.as_dict()  # of this run (resumed episodes not counted)
    atomic_write_json(os.path.join(args.output, summary_file(cfg, args.benchmark, shots)), summary)
    title = (f"FSS {args.benchmark} {shots}-shot (seed {cfg.TEST.FSS.SEED}, text prompt: "
             f"{summary['text_prompt']})")
    print(format_table(title, folds, mean))
    print(throughput)
    return summary


if __name__ == "__main__":
    main()
