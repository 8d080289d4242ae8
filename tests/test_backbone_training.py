"""The synthetic CPU demo trains with each timm ViT (DINOv2 with registers, DINOv3, CLIP).

Runs train_net's Trainer in-process on a tiny generated dataset for a few iterations, with the
demo configs under configs/demo/ scaled down further.
"""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "MODEL.DINOV2.EMBED_DIM", "32", "MODEL.DINOV2.DEPTH", "1", "MODEL.DINOV2.NUM_HEADS", "2",
    "MODEL.SINE.FEAT_CHANS", "32", "MODEL.SINE.MASK_DIM", "32", "MODEL.SINE.NHEADS", "2",
    "MODEL.SINE.DIM_FEEDFORWARD", "64", "MODEL.SINE.DEC_LAYERS", "1",
    "MODEL.SINE.TRAIN_NUM_POINTS", "256", "MODEL.SINE.PAD_SIZE", "112", "INPUT.IMAGE_SIZE", "112",
    "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "100",
]
# 112 px (PAD_SIZE above) is 8 patches of 14 and 7 of 16.
DEMOS = {
    "dinov2_reg4": "sine_synthetic_tiny_dinov2_reg4.yaml",
    "dinov3": "sine_synthetic_tiny_dinov3.yaml",
    "clip": "sine_synthetic_tiny_clip.yaml",
}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from sine.data.synthetic import generate_synthetic

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic(root, seed=0, num_train=6, num_val=2, num_videos=1, fewshot_seeds=1,
                       video_frames=(3, 3), video_size=(48, 64))
    return root


@pytest.mark.parametrize("name", sorted(DEMOS))
def test_demo_trains_with_vit(name, synthetic_root, tmp_path, monkeypatch):
    sys.path.insert(0, ROOT)
    from sine.data.datasets.register_synthetic import register_synthetic
    from train_net import Trainer, setup

    class Args:
        config_file = os.path.join(ROOT, "configs", "demo", DEMOS[name])
        opts = ["OUTPUT_DIR", str(tmp_path), *TINY]
        eval_only, resume, num_gpus, num_machines, machine_rank = False, False, 1, 1, 0

    monkeypatch.setenv("DETECTRON2_DATASETS", synthetic_root)
    register_synthetic(synthetic_root)
    trainer = Trainer(setup(Args))
    vit = trainer.model.image_encoder.encoder
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    trainer.train()
    assert trainer.iter == 3  # MAX_ITER reached
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)
    # The demo trains its random ViT (FROZEN False): the blocks must receive gradients.
    after = vit.state_dict()
    assert not torch.equal(before["blocks.0.norm1.weight"], after["blocks.0.norm1.weight"])
