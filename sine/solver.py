"""Optimizer and learning-rate schedule of SINE (spec §6.3)."""
import torch
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import LinearParamScheduler

__all__ = ["NO_DECAY_MODULES", "build_sine_optimizer", "build_sine_lr_scheduler"]

# Official rule: parameters of these module types get no weight decay; everything else,
# biases, the neck's channel LayerNorms, `temp` and `logit_scale` included, gets
# SOLVER.WEIGHT_DECAY (DeepSpeed AdamW param groups of tools/train.py).
NO_DECAY_MODULES = (
    torch.nn.LayerNorm,
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.GroupNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
    torch.nn.LocalResponseNorm,
    torch.nn.Embedding,
)


def sine_param_groups(model, weight_decay):
    """Two AdamW groups over the trainable parameters: with and without weight decay.

    Frozen parameters (the DINOv2 encoder) are not handed to the optimizer at all.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if isinstance(module, NO_DECAY_MODULES) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _with_full_model_clipping(optim_cls, max_norm, norm_type):
    """Clip the global gradient norm over all parameters, as DeepSpeed's gradient_clipping."""

    class FullModelClippingOptimizer(optim_cls):
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
            return super().step(closure=closure)

    return FullModelClippingOptimizer


def build_sine_optimizer(cfg, model):
    if cfg.SOLVER.OPTIMIZER.upper() != "ADAMW":
        raise ValueError(f"SOLVER.OPTIMIZER {cfg.SOLVER.OPTIMIZER!r} not supported; use ADAMW")
    optim_cls = torch.optim.AdamW
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED:
        if clip.CLIP_TYPE != "full_model":
            raise ValueError("SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'full_model' for SINE")
        optim_cls = _with_full_model_clipping(optim_cls, clip.CLIP_VALUE, clip.NORM_TYPE)
    return optim_cls(
        sine_param_groups(model, cfg.SOLVER.WEIGHT_DECAY),
        lr=cfg.SOLVER.BASE_LR,
        betas=tuple(cfg.SOLVER.BETAS),
        eps=cfg.SOLVER.EPS,
    )


def build_sine_lr_scheduler(cfg, optimizer):
    """Linear warmup to BASE_LR over WARMUP_ITERS, then linear decay to 0 at MAX_ITER.

    Equals DeepSpeed's WarmupDecayLR of the official recipe (warmup_min_lr 0).
    """
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupLinearDecayLR":
        from detectron2.solver import build_lr_scheduler

        return build_lr_scheduler(cfg, optimizer)
    max_iter = cfg.SOLVER.MAX_ITER
    # The decay phase must keep a non-zero length, also for runs shorter than the warm-up.
    warmup_iters = min(cfg.SOLVER.WARMUP_ITERS, max_iter - 1)
    sched = WarmupParamScheduler(
        LinearParamScheduler(1.0, 0.0),
        cfg.SOLVER.WARMUP_FACTOR,
        warmup_iters / max_iter,
        cfg.SOLVER.WARMUP_METHOD,
        rescale_interval=True,
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=max_iter)
