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
import importlib
import logging
import shlex

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from sine.config import get_sine_cfg

# The trainer lives in the package so that training works from any working directory.
from sine.engine.trainer import Trainer, ddp_device_ids  # noqa: F401  (train_net.Trainer)


def setup(args):
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


def get_parser():
    parser = default_argument_parser()
    parser.add_argument("--suite", choices=sorted(SUITES),
                        help="with --eval-only: run this evaluation suite (inference_<suite>) "
                             "with the config, the launch options and the overrides")
    parser.add_argument("--suite-args", default="", metavar="ARGS",
                        help='the suite\'s own options as one string, e.g. "--benchmark coco '
                             '--output out/fss" (see python -m inference_fss.eval --help)')
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
