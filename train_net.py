#!/usr/bin/env python
"""Train and evaluate SINE with detectron2.

    python train_net.py --config-file configs/demo/sine_synthetic_tiny.yaml
    python train_net.py --config-file ... --num-gpus 8               # one machine, DDP
    python train_net.py --config-file ... --num-machines 2 --machine-rank 0 --dist-url tcp://...
    python train_net.py --config-file ... --resume                   # continue the last checkpoint
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file configs/vos/davis17.yaml --eval-only --suite vos \
        --suite-args "--dataset davis17 --output out/vos" --num-gpus 2 MODEL.WEIGHTS sine.pth

``--eval-only`` evaluates the config's DATASETS.TEST; with ``--suite fss|fsod|vos`` it runs that
evaluation suite's command line instead (same config, launch options and overrides; the
suite's own options in ``--suite-args``).
"""
import argparse
import importlib
import logging
import os
import shlex
import sys

# Only light modules at import time: `--help` must not wait for torch / detectron2, which the
# functions below import when they run.
from sine.utils.cli import add_launch_args


def __getattr__(name):
    # train_net.Trainer / train_net.ddp_device_ids: the trainer lives in the package (training
    # works from any working directory); imported on first use (PEP 562).
    if name in ("Trainer", "ddp_device_ids"):
        from sine.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def setup(args):
    import torch
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from sine.config import get_sine_cfg

    cfg = get_sine_cfg(args.config_file, args.opts)
    on_cuda = torch.device(cfg.MODEL.DEVICE).type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        cfg.MODEL.DEVICE, on_cuda = "cpu", False
    # Mixed precision only where it pays off and is supported: CUDA.
    cfg.SOLVER.AMP.ENABLED = cfg.SOLVER.AMP.ENABLED and on_cuda
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="sine")
    return cfg


def main(args):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.evaluation import verify_results
    from detectron2.utils import comm

    from sine.engine.trainer import Trainer

    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.get_rank() == 0:
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


#: --suite NAME -> (module, function taking the suite's argv); each suite launches its processes.
SUITES = {
    "fss": ("inference_fss.eval", "main"),
    "fsod": ("inference_fsod.eval", "main_cli"),
    "vos": ("inference_vos.run_vos", "main"),
}


def _default_dist_url() -> str:
    # detectron2's default_argument_parser: a port fixed per user, so that an orphan process of
    # an earlier run shows up as "port in use".
    uid = os.getuid() if sys.platform != "win32" else 1
    return f"tcp://127.0.0.1:{2 ** 15 + 2 ** 14 + hash(uid) % 2 ** 14}"


def get_parser():
    """The options of detectron2's ``default_argument_parser`` (tests/test_cli_help.py checks
    they match), built without importing detectron2, plus ``--suite`` / ``--suite-args``."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate SINE / SegIC with detectron2.",
        epilog="Config overrides go last: ... --config-file cfg.yaml MODEL.WEIGHTS model.pth "
               "SOLVER.BASE_LR 0.001")
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint of OUTPUT_DIR (if any)")
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    add_launch_args(parser, dist_url=_default_dist_url())
    parser.add_argument("--suite", choices=sorted(SUITES),
                        help="with --eval-only: run this evaluation suite (inference_<suite>) "
                             "with the config, the launch options and the overrides")
    parser.add_argument("--suite-args", default="", metavar="ARGS",
                        help='the suite\'s own options as one string, e.g. "--benchmark coco '
                             '--output out/fss" (see python -m inference_fss.eval --help)')
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=None, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS model.pth (last on the line)")
    return parser


def suite_argv(args):
    """The suite command line of ``--eval-only --suite``: config, suite options, launch options,
    then the KEY VALUE overrides (last, as every CLI of the project takes them)."""
    return ["--config-file", args.config_file, *shlex.split(args.suite_args),
            "--num-gpus", str(args.num_gpus), "--num-machines", str(args.num_machines),
            "--machine-rank", str(args.machine_rank), "--dist-url", args.dist_url, *args.opts]


def run_suite(args):
    module, function = SUITES[args.suite]
    return getattr(importlib.import_module(module), function)(suite_argv(args))


def invoke_main(argv=None):
    args = get_parser().parse_args(argv)
    logging.getLogger("sine").info(f"Command line arguments: {args}")
    if args.suite or args.suite_args:
        if not (args.eval_only and args.suite):
            raise SystemExit("train_net.py: --suite NAME and --suite-args go with --eval-only "
                             "(give all three to run an evaluation suite)")
        return run_suite(args)
    from detectron2.engine import launch

    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()  # pragma: no cover
