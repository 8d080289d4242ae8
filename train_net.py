#!/usr/bin/env python
"""Train and evaluate SINE with detectron2.

    python train_net.py --config-file configs/demo/sine_synthetic_tiny.yaml
    python train_net.py --config-file ... --num-gpus 8               # one machine, DDP
    python train_net.py --config-file ... --num-machines 2 --machine-rank 0 --dist-url tcp://...
    python train_net.py --config-file ... --resume                   # continue the last checkpoint
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
"""
import logging
import os
import weakref

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    launch,
)
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from sine.config import get_sine_cfg
from sine.data.build import build_sine_train_loader
from sine.engine.transfer import AdapterSaver, is_transfer_model, prepare_transfer_model
from sine.evaluation.build import build_sine_evaluator, build_sine_test_loader
from sine.solver import build_sine_lr_scheduler, build_sine_optimizer


def ddp_device_ids(device: str):
    """DDP's ``device_ids``: this process's GPU (its rank on the machine), none on CPU (gloo)."""
    return None if torch.device(device).type == "cpu" else [comm.get_local_rank()]


class Trainer(DefaultTrainer):
    """DefaultTrainer with SINE's pair loader, optimizer groups, schedule and evaluators."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__, except that DDP gets no device_ids on CPU (gloo), which
        # detectron2's create_ddp_model always passes.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        # SegIC's losses never reach some parameters (the unsupervised IoU head, the unused
        # multimask outputs), which DDP must be told about.
        model = create_ddp_model(
            model, broadcast_buffers=False, device_ids=ddp_device_ids(cfg.MODEL.DEVICE),
            find_unused_parameters=getattr(model, "ddp_find_unused_parameters", False),
        )
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        if is_transfer_model(model):
            prepare_transfer_model(cfg, model)
        return model

    def build_hooks(self):
        hooks = super().build_hooks()
        if is_transfer_model(self.model):
            # Before the writers (last), so the adapter is written when training ends.
            hooks.insert(-1, AdapterSaver(self.cfg.OUTPUT_DIR))
        return hooks

    @classmethod
    def build_train_loader(cls, cfg):
        return build_sine_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_sine_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_sine_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_sine_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_sine_lr_scheduler(cfg, optimizer)


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
