import torch
from detectron2.config import get_cfg

from sine import add_sine_config
from sine.solver import build_sine_lr_scheduler, build_sine_optimizer


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)
        self.linear = torch.nn.Linear(2, 2)
        self.norm = torch.nn.LayerNorm(2)
        self.embed = torch.nn.Embedding(3, 2)
        self.temp = torch.nn.Parameter(torch.tensor(30.0))


def _cfg(max_iter=1000):
    cfg = get_cfg()
    add_sine_config(cfg)
    cfg.SOLVER.MAX_ITER = max_iter
    return cfg


def test_weight_decay_groups_follow_the_official_rule():
    model = _Toy()
    opt = build_sine_optimizer(_cfg(), model)
    decay = {id(p) for p in opt.param_groups[0]["params"]}
    no_decay = {id(p) for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0
    # biases and bare parameters (temp) decay; nn.LayerNorm and nn.Embedding do not
    assert {id(model.linear.weight), id(model.linear.bias), id(model.temp)} == decay
    assert {id(p) for p in (*model.norm.parameters(), model.embed.weight)} == no_decay
    # the frozen module is not in the optimizer at all
    assert not {id(p) for p in model.frozen.parameters()} & (decay | no_decay)


def test_warmup_then_linear_decay_to_zero():
    model = _Toy()
    opt = build_sine_optimizer(_cfg(), model)
    sched = build_sine_lr_scheduler(_cfg(), opt)
    lrs = []
    for _ in range(1000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0
    assert abs(lrs[50] - 5e-5) < 1e-12  # half-way through warm-up
    assert abs(lrs[100] - 1e-4) < 1e-12  # peak at the end of warm-up
    assert abs(lrs[550] - 5e-5) < 1e-9  # linear decay from the peak ...
    assert lrs[999] < 2e-7  # ... to zero at MAX_ITER


def test_full_model_gradient_clipping():
    model = _Toy()
    opt = build_sine_optimizer(_cfg(), model)
    for p in (model.linear.weight, model.linear.bias, model.temp):
        p.grad = torch.full_like(p, 100.0)
    for p in (*model.norm.parameters(), model.embed.weight):
        p.grad = torch.zeros_like(p)
    opt.step()
    grads = [p.grad for g in opt.param_groups for p in g["params"]]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert abs(total.item() - 1.0) < 1e-4


def test_runs_shorter_than_the_warmup_still_schedule():
    cfg = _cfg(max_iter=30)
    cfg.SOLVER.WARMUP_ITERS = 50
    model = _Toy()
    opt = build_sine_optimizer(cfg, model)
    sched = build_sine_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(31):  # one step past the end, as detectron2's hook does
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == sorted(lrs[:30]) + lrs[30:] and max(lrs) <= 1e-4
