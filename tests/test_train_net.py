"""train_net.py end to end on a tiny synthetic dataset: DDP on CPU and resuming a killed run."""
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


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from sine.data.synthetic import generate_synthetic

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic(root, seed=0, num_train=8, num_val=8, num_videos=1, fewshot_seeds=1,
                       video_frames=(3, 3), video_size=(48, 64))
    return root


def _train_cmd(output_dir, *extra):
    return [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", CONFIG,
            *extra, "OUTPUT_DIR", str(output_dir), *TINY]


def _env(root):
    return dict(os.environ, DETECTRON2_DATASETS=root, OMP_NUM_THREADS="1",
                PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_two_process_ddp_on_cpu(synthetic_root, tmp_path):
    cmd = _train_cmd(tmp_path, "--num-gpus", "2", "--dist-url", "tcp://127.0.0.1:29517")
    cmd += ["SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "100"]
    proc = subprocess.run(cmd, env=_env(synthetic_root), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(tmp_path / "log.txt").read()
    assert "world size: 2" in log.lower() or "Rank of current process: 0. World size: 2" in log
    assert os.path.isfile(tmp_path / "model_final.pth")


def test_killed_run_resumes_from_its_last_checkpoint(synthetic_root, tmp_path):
    cmd = _train_cmd(tmp_path, "SOLVER.MAX_ITER", "100000", "SOLVER.CHECKPOINT_PERIOD", "2")
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
        config_file = CONFIG
        opts = ["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", str(saved["iteration"] + 3),
                "SOLVER.CHECKPOINT_PERIOD", "2", *TINY]
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
