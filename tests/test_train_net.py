"""train_net.py end to end on a tiny synthetic dataset: DDP on CPU and resuming a killed run, for
SINE and for SegIC (its synthetic demo config: SegIC's pair policy and StepLR schedule)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo", "sine_synthetic_tiny.yaml")
# A model small enough for a few iterations per second on one CPU thread.
TINY = [
    "MODEL.DINOV2.EMBED_DIM", "48", "MODEL.DINOV2.DEPTH", "1", "MODEL.DINOV2.NUM_HEADS", "2",
    "MODEL.SINE.FEAT_CHANS", "32", "MODEL.SINE.MASK_DIM", "32", "MODEL.SINE.NHEADS", "2",
    "MODEL.SINE.DIM_FEEDFORWARD", "64", "MODEL.SINE.DEC_LAYERS", "1",
    "MODEL.SINE.TRAIN_NUM_POINTS", "256", "MODEL.SINE.PAD_SIZE", "112",
    "INPUT.IMAGE_SIZE", "112", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
    "DATASETS.TEST", "()", "SOLVER.WARMUP_ITERS", "2",
]
SEGIC_CONFIG = os.path.join(ROOT, "configs", "segic", "segic_synthetic_tiny.yaml")
SEGIC_TINY = [
    "MODEL.DINOV2.EMBED_DIM", "48", "MODEL.DINOV2.DEPTH", "1", "MODEL.DINOV2.NUM_HEADS", "2",
    "MODEL.SEGIC.WIDTH", "32", "MODEL.SEGIC.NHEADS", "2", "MODEL.SEGIC.MLP_DIM", "64",
    "MODEL.SEGIC.DEC_LAYERS", "1", "MODEL.SEGIC.TRAIN.NUM_POINTS", "256",
    "MODEL.SEGIC.IMAGE_SIZE", "112", "INPUT.IMAGE_SIZE", "112", "INPUT.SEGIC.MAX_INSTANCES", "3",
    "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()",
]
MODELS = {"sine": (CONFIG, TINY), "segic": (SEGIC_CONFIG, SEGIC_TINY)}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from sine.data.synthetic import generate_synthetic

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic(root, seed=0, num_train=8, num_val=8, num_videos=1, fewshot_seeds=1,
                       video_frames=(3, 3), video_size=(48, 64))
    return root


def _train_cmd(model, output_dir, *extra):
    config, tiny = MODELS[model]
    return [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", config,
            *extra, "OUTPUT_DIR", str(output_dir), *tiny]


def _env(root):
    return dict(os.environ, DETECTRON2_DATASETS=root, OMP_NUM_THREADS="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_two_process_ddp_on_cpu(synthetic_root, tmp_path, model):
    port = 29517 + sorted(MODELS).index(model)
    cmd = _train_cmd(model, tmp_path, "--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{port}")
    cmd += ["SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "100"]
    proc = subprocess.run(cmd, env=_env(synthetic_root), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(tmp_path / "log.txt").read()
    assert "world size: 2" in log.lower() or "Rank of current process: 0. World size: 2" in log
    assert os.path.isfile(tmp_path / "model_final.pth")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_killed_run_resumes_from_its_last_checkpoint(synthetic_root, tmp_path, model):
    config, tiny = MODELS[model]
    cmd = _train_cmd(model, tmp_path, "SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD",
                     "2")
    proc = subprocess.Popen(cmd, env=_env(synthetic_root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / "model_0000003.pth"
    deadline = time.time() + 240
    while not ckpt.exists():
        assert proc.poll() is None and time.time() < deadline, "training did not checkpoint"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # no clean shutdown: like a pre-empted job
    proc.wait()
    last = (tmp_path / "last_checkpoint").read_text().strip()
    saved = torch.load(tmp_path / last, map_location="cpu", weights_only=False)["trainer"]

    sys.path.insert(0, ROOT)
    from train_net import Trainer, setup

    class Args:
        config_file = config
        opts = ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", str(saved["iteration"] + 3),
                "SOLVER.CHECKPOINT_PERIOD", "2", *tiny]
        eval_only, resume, num_gpus, num_machines, machine_rank = False, True, 1, 1, 0

    os.environ["DETECTRON2_DATASETS"] = synthetic_root
    from sine.data.datasets.register_synthetic import register_synthetic

    register_synthetic(synthetic_root)
    trainer = Trainer(setup(Args))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == saved["iteration"] + 1
    state = trainer.optimizer.state_dict()
    saved_optimizer = saved["_trainer"]["optimizer"]
    assert saved_optimizer["state"], "the checkpoint holds no optimizer state"
    for k, v in saved_optimizer["state"].items():
        assert torch.equal(state["state"][k]["exp_avg"], v["exp_avg"])
        assert state["state"][k]["step"] == v["step"]
    assert trainer.scheduler.last_epoch == saved["hooks"]["LRScheduler"]["last_epoch"]
    trainer.train()
    assert trainer.iter == saved["iteration"] + 3


# ------------------------------------------------------------------ the CUDA branch, on CPU
class _Args:
    eval_only, resume, num_gpus, num_machines, machine_rank = False, False, 1, 1, 0

    def __init__(self, output_dir, *opts):
        self.config_file = CONFIG
        self.opts = ["OUTPUT_DIR", str(output_dir), *TINY, *opts]


@pytest.fixture
def pretend_cuda(cuda_placements, monkeypatch):
    """A machine that reports a GPU; model placement on it is recorded and skipped.

    Everything else runs for real on CPU: the Trainer's construction, AMPTrainer with its
    GradScaler, the hooks, the checkpoint.
    """
    # Memory statistics the metric writers read when CUDA is available.
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: None)
    # The optimizer's CUDA-graph capture check asks the (absent) device for its stream.
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: None)
    return cuda_placements


def test_setup_keeps_cuda_and_amp_only_where_cuda_exists(tmp_path, monkeypatch):
    sys.path.insert(0, ROOT)
    from train_net import setup

    args = _Args(tmp_path, "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = setup(args)
    assert (cfg.MODEL.DEVICE, cfg.SOLVER.AMP.ENABLED) == ("cpu", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = setup(args)
    assert (cfg.MODEL.DEVICE, cfg.SOLVER.AMP.ENABLED) == ("cuda", True)


def test_trainer_on_cuda_uses_the_local_gpu_for_ddp_and_trains_with_amp(
        synthetic_root, tmp_path, monkeypatch, pretend_cuda):
    sys.path.insert(0, ROOT)
    from detectron2.engine import AMPTrainer
    from detectron2.utils import comm

    import sine.engine.trainer as trainer_module
    import train_net
    from sine.data.datasets.register_synthetic import register_synthetic

    register_synthetic(synthetic_root)
    ddp_calls = []
    create_ddp_model = trainer_module.create_ddp_model
    monkeypatch.setattr(trainer_module, "create_ddp_model", lambda model, **kw: (
        ddp_calls.append(kw) or create_ddp_model(model, **kw)))
    monkeypatch.setattr(comm, "get_local_rank", lambda: 3)  # 4th GPU of its machine

    # AMPTrainer's CUDA autocast would leave CPU tensors in fp32: run its fp16 on the CPU.
    monkeypatch.setattr(torch.cuda.amp, "autocast",
                        lambda dtype=torch.float16, **kw: torch.autocast("cpu", dtype=dtype))
    # The default initial loss scale (2^16) overflows the first steps, which the scaler skips
    # while it halves the scale; starting at 2^4 lets the two steps below update the model.
    grad_scaler = torch.cuda.amp.GradScaler
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", lambda **kw: grad_scaler(init_scale=16.0))

    cfg = train_net.setup(_Args(tmp_path, "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True",
                                "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "100"))
    trainer = train_net.Trainer(cfg)
    assert ("SINE", "cuda") in pretend_cuda  # built on the GPU
    assert ddp_calls == [{"broadcast_buffers": False, "device_ids": [3],
                          "find_unused_parameters": False}]
    assert isinstance(trainer._trainer, AMPTrainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
              if p.requires_grad}
    linear_dtypes = set()
    for m in trainer.model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda mod, a, out: linear_dtypes.add(out.dtype))
    trainer.train()
    assert torch.float16 in linear_dtypes  # the steps ran in mixed precision
    assert trainer.iter == cfg.SOLVER.MAX_ITER
    scaler = trainer._trainer.grad_scaler
    assert scaler.is_enabled() and scaler.get_scale() > 0  # the scaler took part
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad
               and not torch.equal(p.detach(), before[n])]
    assert changed, f"no AMP step updated a parameter (scale {scaler.get_scale()})"
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert "grad_scaler" in saved["trainer"]["_trainer"]


def test_ddp_device_ids():
    sys.path.insert(0, ROOT)
    from train_net import ddp_device_ids

    assert ddp_device_ids("cpu") is None
    assert ddp_device_ids("cuda") == [0] and ddp_device_ids("cuda:0") == [0]
