"""ONNX export (tools/export_onnx.py) + onnxruntime match the PyTorch model on a tiny SINE.

Tolerance: 1e-4 absolute on neck features, logits and mask logits (float32; measured ~3e-6),
and identical binarised masks wherever |logit| > 1e-4.
"""
import json
import sys

import pytest
import torch

NO_EXTRA = "the onnx extra is not installed (pip install -e .[onnx])"
pytest.importorskip("onnxruntime", reason=NO_EXTRA)
pytest.importorskip("onnxscript", reason=NO_EXTRA)

from tiny_model import TINY_MODEL_OPTS  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random SINE (ViT depth 1) exported by the CLI: encoder + decoder for 3 masks / 2
    classes."""
    from detectron2.modeling import build_model

    from sine.config import get_sine_cfg

    sys.path.insert(0, "tools")
    out = tmp_path_factory.mktemp("onnx")
    opts = TINY_MODEL_OPTS + ["MODEL.DINOV2.DEPTH", "1", "MODEL.DINOV2.VIT", "timm_dinov2"]
    torch.manual_seed(0)
    cfg = get_sine_cfg(opts=opts)
    model = build_model(cfg).eval()
    weights = out / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    from export_onnx import main

    main(["--config-file", "configs/demo/sine_synthetic_tiny.yaml", "--output", str(out),
          "--num-id-tokens", "3", "--num-classes", "2", *opts, "MODEL.WEIGHTS", str(weights)])
    return model, out, cfg


def test_encoder_matches_pytorch_for_any_batch(exported):
    from sine.export.onnx import OnnxEncoder

    model, out, _ = exported
    encoder = OnnxEncoder(str(out / "encoder.onnx"))
    for batch in (1, 3):
        images = torch.randn(batch, 3, model.pad_size, model.pad_size)
        with torch.no_grad():
            expected = model.image_encoder(images)["neck"]
        actual = encoder(images)["neck"]
        assert actual.shape == expected.shape
        assert (actual - expected).abs().max() <= ATOL
    with pytest.raises(ValueError, match="export one for that size"):
        encoder(torch.zeros(1, 3, model.pad_size + 14, model.pad_size + 14))


def test_decoder_with_cached_tokens_matches_pytorch(exported):
    from sine.export.onnx import DECODER_OUTPUTS, OnnxDecoder
    from sine.modeling.transformer_decoder.reference_pooling import get_reference_pooling

    model, out, _ = exported
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["decoder_nm3_nc2.onnx"]["num_id_tokens"] == 3
    decoder = OnnxDecoder(str(out / "decoder_nm3_nc2.onnx"))
    g = torch.Generator().manual_seed(1)
    size = model.pad_size
    images = torch.randn(2, 3, size, size, generator=g)
    masks = torch.zeros(3, size, size, dtype=torch.bool)
    masks[0, :40, :50], masks[1, 50:, 30:], masks[2, 10:60, 60:100] = True, True, True
    dec = model.transformer_decoder
    with torch.no_grad():
        feats = model.image_encoder(images)["neck"]
        grid = tuple(4 * n for n in feats.shape[-2:])  # the mask-feature grid
        pool = get_reference_pooling(dec.reference_pooling)
        id_tok, sem_tok, id_lab, sem_lab = pool(feats[:1], [masks], [torch.tensor([4, 7, 4])],
                                                grid, dec.mask_pooling)
        expected = dec.forward_tokens(id_tok, sem_tok, id_lab, sem_lab, feats[1:], lazy_aux=True)
    actual = decoder(feats[1:], id_tok, sem_tok)
    for key in DECODER_OUTPUTS:
        assert actual[key].shape == expected[key].shape, key
        assert (actual[key] - expected[key]).abs().max() <= ATOL, key
    for key in ("pred_id_masks", "pred_ins_masks"):
        sure = expected[key].abs() > ATOL
        assert torch.equal((actual[key] > 0)[sure], (expected[key] > 0)[sure])
    with pytest.raises(ValueError, match="exported for 3 reference masks"):
        decoder(feats[1:], id_tok[:, :2], sem_tok)


def test_predictor_onnx_backend_gives_the_torch_results(exported, tmp_path):
    """backend="onnx" behind the same predictor API: same ID masks, classes and scores."""
    import shutil

    import numpy as np

    from sine.engine.predictor import InContextPredictor

    model, out, cfg = exported
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for name in ("encoder.onnx", "decoder_nm3_nc2.onnx"):  # 3 masks, 2 classes below
        shutil.copy(out / name, onnx_dir / name)
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (90, 100, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)
    masks = np.zeros((3, 90, 100), bool)
    masks[0, :40, :50], masks[1, 50:, 30:], masks[2, 10:60, 60:] = True, True, True
    results = {}
    for backend in ("torch", "onnx"):
        predictor = InContextPredictor(cfg, model=model, backend=backend,
                                       onnx_dir=str(onnx_dir))
        predictor.set_reference(ref, masks, labels=[4, 7, 4])
        results[backend] = predictor.predict(target, outputs={"id", "sem_seg"})
    ours, theirs = results["onnx"], results["torch"]
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["decoder_nm3_nc2.onnx", "encoder.onnx"]
    assert torch.equal(ours["id"].pred_ids, theirs["id"].pred_ids)
    assert torch.allclose(ours["id"].scores, theirs["id"].scores, atol=ATOL)
    flipped = (ours["id"].pred_masks != theirs["id"].pred_masks).float().mean()
    assert flipped < 1e-3  # only pixels whose logit is ~0
    assert torch.allclose(ours["sem_seg"], theirs["sem_seg"], atol=ATOL)

