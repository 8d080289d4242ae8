"""LoRA transfer model (SINETransfer): what trains, the adapter file, merged inference, outputs
for SemSegEvaluator / COCOPanopticEvaluator, and train_net.py end to end. Tiny random models on a
tiny generated synthetic tree."""
import os
import subprocess
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from tiny_model import TINY_MODEL_OPTS

from sine.config import get_sine_cfg
from sine.data.dataset_mappers.transfer_mapper import TransferMapper, TransferTestMapper
from sine.engine.transfer import prepare_transfer_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 44  # synthetic: 40 things + 4 stuff
TRANSFER_OPTS = [
    "MODEL.META_ARCHITECTURE", "SINETransfer", "MODEL.TRANSFER.NUM_CLASSES", str(NUM_CLASSES),
    "MODEL.TRANSFER.LORA.RANK", "4", "MODEL.TRANSFER.LORA.ALPHA", "4.0",
    "MODEL.TRANSFER.PROTOTYPE_INIT", "random", "MODEL.TRANSFER.PROTOTYPE_INIT_IMAGES", "3",
    "MODEL.SINE.TRAIN_NUM_POINTS", "256",
    "INPUT.IMAGE_SIZE", "112", "INPUT.DATASET_MAPPER_NAME", "transfer",
    "DATASETS.TRAIN", "('synthetic_train_panoptic',)",
    "DATASETS.TEST", "('synthetic_val_panoptic',)",
    "MODEL.TRANSFER.PANOPTIC.INSTANCE_SCORE_THRESH", "0.0",
]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from sine.data.datasets.register_synthetic import register_synthetic
    from sine.data.synthetic import generate_synthetic

    root = str(tmp_path_factory.mktemp("datasets"))
    generate_synthetic(root, seed=0, num_train=4, num_val=3, num_videos=0, fewshot_seeds=1,
                       shots=(1,))
    register_synthetic(root)
    return root


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory):
    """A tiny random in-context SINE saved as the base checkpoint."""
    torch.manual_seed(0)
    model = build_model(get_sine_cfg(None, TINY_MODEL_OPTS))
    path = str(tmp_path_factory.mktemp("base") / "base.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


def _cfg(base_weights, *opts):
    return get_sine_cfg(None, [*TINY_MODEL_OPTS, *TRANSFER_OPTS,
                               "MODEL.TRANSFER.BASE_WEIGHTS", base_weights, *opts])


def _model(cfg):
    torch.manual_seed(1)
    return prepare_transfer_model(cfg, build_model(cfg))


def _train_steps(model, cfg, steps=3):
    mapper = TransferMapper(cfg)
    records = DatasetCatalog.get("synthetic_train_panoptic")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for step in range(steps):
        batch = [x for x in (mapper(r) for r in records[step % 2: step % 2 + 2]) if x]
        losses = model(batch)
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses


def _eval_outputs(model, cfg):
    model.eval()
    mapper = TransferTestMapper(cfg)
    inputs = [mapper(r) for r in DatasetCatalog.get("synthetic_val_panoptic")[:2]]
    with torch.no_grad():
        return inputs, model(inputs)


def test_only_lora_and_prototypes_train(synthetic_root, base_weights):
    model = _model(_cfg(base_weights))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "prototypes" in trainable
    others = trainable - {"prototypes"}
    assert others and all(".attn.qkv.lora_" in n for n in others)
    base = {k: v.clone() for k, v in model.state_dict().items()
            if "lora_" not in k and k != "prototypes"}
    proto = model.prototypes.detach().clone()
    losses = _train_steps(model, _cfg(base_weights))
    assert not any(k.startswith("loss_ce_id") for k in losses)  # no ID tokens in this task
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base.items())  # base weights untouched
    assert not torch.equal(model.prototypes.detach(), proto)


def test_reference_init_pools_the_training_masks(synthetic_root, base_weights):
    reference = _model(_cfg(base_weights, "MODEL.TRANSFER.PROTOTYPE_INIT", "reference"))
    random = _model(_cfg(base_weights))
    changed = (reference.prototypes - random.prototypes).abs().sum(1) > 0
    # The 4 stuff classes are in every image; a class absent from the 3 images stays random.
    assert changed[40:].all() and 0 < int(changed.sum()) < NUM_CLASSES


def test_adapter_file_is_small_and_loads_on_the_base(synthetic_root, base_weights, tmp_path):
    cfg = _cfg(base_weights)
    model = _model(cfg)
    _train_steps(model, cfg)
    inputs, trained = _eval_outputs(model, cfg)
    path = str(tmp_path / "adapter.pth")
    model.save_adapter(path)
    full = str(tmp_path / "full.pth")
    torch.save(model.state_dict(), full)
    assert os.path.getsize(path) < 0.5 * os.path.getsize(full)

    fresh = _model(_cfg(base_weights, "MODEL.TRANSFER.ADAPTER_WEIGHTS", path))
    _, reloaded = _eval_outputs(fresh, cfg)
    for a, b in zip(trained, reloaded):
        assert torch.allclose(a["sem_seg"], b["sem_seg"], atol=1e-5)
    untrained = _model(cfg)
    _, before = _eval_outputs(untrained, cfg)
    assert not torch.allclose(before[0]["sem_seg"], trained[0]["sem_seg"], atol=1e-4)

    with pytest.raises(ValueError, match="LoRA settings"):
        _model(_cfg(base_weights, "MODEL.TRANSFER.ADAPTER_WEIGHTS", path,
                    "MODEL.TRANSFER.LORA.RANK", "8"))


def test_merged_inference_equals_the_unmerged_adapter(synthetic_root, base_weights):
    cfg = _cfg(base_weights)
    model = _model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    _, merged = _eval_outputs(model, cfg)
    assert any(getattr(m, "merged", False) for m in model.modules())
    unmerged_model = _model(_cfg(base_weights, "MODEL.TRANSFER.MERGE_FOR_INFERENCE", "False"))
    unmerged_model.load_state_dict(model.state_dict())
    unmerged_model.base.image_encoder.encoder.load_state_dict(
        model.base.image_encoder.encoder.state_dict())
    model.train()  # unmerges: the state dict holds the base weights again
    unmerged_model.load_state_dict(model.state_dict())
    _, unmerged = _eval_outputs(unmerged_model, cfg)
    assert not any(getattr(m, "merged", False) for m in unmerged_model.modules())
    assert torch.allclose(merged[0]["sem_seg"], unmerged[0]["sem_seg"], atol=1e-4)


def test_outputs_feed_the_detectron2_evaluators(synthetic_root, base_weights, tmp_path):
    from detectron2.evaluation import COCOPanopticEvaluator, SemSegEvaluator

    from sine.evaluation.panoptic_sem_seg import load_label_png

    cfg = _cfg(base_weights)
    inputs, outputs = _eval_outputs(_model(cfg), cfg)
    first = outputs[0]
    assert first["sem_seg"].shape == (NUM_CLASSES, inputs[0]["height"], inputs[0]["width"])
    pan, segments = first["panoptic_seg"]
    assert pan.shape == (inputs[0]["height"], inputs[0]["width"])
    assert sorted(s["id"] for s in segments) == sorted(set(pan.unique().tolist()) - {0})
    sem = SemSegEvaluator("synthetic_val_sem_seg", distributed=False,
                          sem_seg_loading_fn=load_label_png)
    pq = COCOPanopticEvaluator("synthetic_val_panoptic", str(tmp_path))
    for ev in (sem, pq):
        ev.reset()
        ev.process(inputs, outputs)
    assert 0 <= sem.evaluate()["sem_seg"]["mIoU"] <= 100
    # Only 2 of the 3 val images were predicted: panopticapi insists on all of them.
    with pytest.raises(Exception, match="no prediction"):
        pq.evaluate()


def test_train_net_trains_saves_the_adapter_and_evaluates_it(synthetic_root, base_weights,
                                                             tmp_path):
    env = dict(os.environ, DETECTRON2_DATASETS=synthetic_root, OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    common = [*TINY_MODEL_OPTS, *TRANSFER_OPTS, "MODEL.TRANSFER.BASE_WEIGHTS", base_weights,
              "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
              "SOLVER.WARMUP_ITERS", "1", "TEST.EVAL_PERIOD", "0"]
    train = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), *common, "SOLVER.MAX_ITER", "2",
         "OUTPUT_DIR", str(tmp_path / "train")], env=env, capture_output=True, text=True,
        timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    adapter = tmp_path / "train" / "adapter_final.pth"
    assert adapter.is_file()
    evaluate = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_net.py"), "--eval-only", *common,
         "MODEL.TRANSFER.ADAPTER_WEIGHTS", str(adapter), "OUTPUT_DIR", str(tmp_path / "eval")],
        env=env, capture_output=True, text=True, timeout=300)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    log = (tmp_path / "eval" / "log.txt").read_text()
    assert "mIoU" in log and "PQ" in log and "loaded the transfer adapter" in log
