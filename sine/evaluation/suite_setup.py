"""Config and logging set-up shared by the evaluation suites' command lines (FSS, FSOD, VOS)."""
import os
from typing import Dict, Optional, Sequence

from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import get_sine_cfg
from ..utils.cli import add_launch_args  # noqa: F401  (the suites' parsers, built without torch)

__all__ = ["REPO_ROOT", "add_launch_args", "gather_to_main", "launch_suite",
           "resolve_config_file", "setup_suite"]

#: The checkout this package runs from (configs/ lives there in an editable install).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve_config_file(path: str) -> str:
    """``path`` itself if it exists, else the same path under the repository root, so that the
    documented ``configs/...`` paths work from any working directory."""
    if os.path.isfile(path) or os.path.isabs(path):
        return path
    in_repo = os.path.join(REPO_ROOT, path)
    if os.path.isfile(in_repo):
        return in_repo
    raise FileNotFoundError(
        f"config file {path!r} not found (looked in {os.getcwd()} and {REPO_ROOT}); give a path "
        "to a YAML file, e.g. configs/fss/coco20i_1shot.yaml"
    )


def setup_suite(
    config_file: str,
    opts: Sequence[str],
    logger_name: str,
    output_dir: Optional[str] = None,
    overrides: Optional[Dict[str, object]] = None,
):
    """The frozen config of a suite run, with logging to the console and ``output_dir/log.txt``.

    Args:
        config_file: YAML config (see :func:`resolve_config_file`).
        opts: ``KEY VALUE`` overrides from the command line.
        logger_name: the suite's logger (e.g. "inference_fss"); "sine" and detectron2's
            loggers are set up too.
        output_dir: folder of the logs (default: the config's OUTPUT_DIR, after overrides).
        overrides: dotted config keys set from command-line flags; None values are skipped.
    """
    cfg = get_sine_cfg(resolve_config_file(config_file), opts)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node, _, name = key.rpartition(".")
        target = cfg
        for part in node.split(".") if node else []:
            target = getattr(target, part)
        if not hasattr(target, name):
            raise KeyError(f"unknown config key {key}")
        setattr(target, name, value)
    cfg.freeze()
    output_dir = output_dir or cfg.OUTPUT_DIR
    os.makedirs(output_dir, exist_ok=True)
    rank = comm.get_rank()
    for name in ("detectron2", "sine", logger_name):
        setup_logger(output_dir, distributed_rank=rank, name=name)
    return cfg


def launch_suite(worker, args, *worker_args) -> bool:
    """Run ``worker(args, *worker_args)`` in ``--num-gpus`` x ``--num-machines`` processes.

    Returns True if it ran in several processes (detectron2 ``launch``), False if it must be
    called in this process (one process in all: the caller runs it and gets its return value).
    """
    if args.num_gpus * args.num_machines <= 1:
        return False
    from detectron2.engine import launch

    launch(worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args, *worker_args))
    return True


def gather_to_main(value):
    """``[value of every process]`` on the main process (rank order), None on the others."""
    if comm.get_world_size() == 1:
        return [value]
    gathered = comm.gather(value, dst=0)
    return gathered if comm.is_main_process() else None
