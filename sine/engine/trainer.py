"""The SINE trainer: detectron2's DefaultTrainer with SINE's pair loader, optimizer groups,
schedule, evaluators and (for transfer models) the adapter saver.

Lives in the package (not in train_net.py) so that training works from any working directory:
``from sine.engine.trainer import Trainer`` (train_net.py and ``python -m sine.own_data`` use it).
"""
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
)
from detectron2.utils import comm

from .. import modeling  # noqa: F401  (registers the models the trainer builds)
from ..data.build import build_sine_train_loader
from ..evaluation.build import build_sine_evaluator, build_sine_test_loader
from ..solver import build_sine_lr_scheduler, build_sine_optimizer
from .transfer import AdapterSaver, is_transfer_model, prepare_transfer_model

__all__ = ["Trainer", "ddp_device_ids"]


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
