#!/usr/bin/env python
"""Train and evaluate SINE with detectron2.

    python train_net.py --config-file configs/demo/sine_synthetic_tiny.yaml
    python train_net.py --config-file ... --num-gpus 8               # one machine, DDP
    python train_net.py --config-file ... --num-machines 2 --machine-rank 0 --dist-url tcp://...
    python train_net.py --config-file ... --resume                   # continue the last checkpoint
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
"""
import logging

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


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    logging.getLogger("sine").info(f"Command line arguments: {args}")
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
