"""Negative references ("not this" masks of look-alikes to exclude) for SINE and SegIC, through
the predictor API, the image CLI and the app."""
import numpy as np
import pytest
import torch
from detectron2.structures import Instances

from sine.config import get_sine_cfg
from sine.engine.predictor import InContextPredictor
from sine.modeling.meta_arch.sine_model import NEGATIVE_ID, suppress_negatives
from tests.tiny_model import TINY_MODEL_OPTS, TINY_SEGIC_OPTS

RED = (220, 40, 30)


def look_alikes():
    """A reference with two identical red squares: the object (mask) and a look-alike (negative)."""
    image = np.full((60, 80, 3), 200, np.uint8)
    image[5:25, 5:25], image[30:55, 40:65] = RED, RED
    obj, alike = np.zeros((2, 60, 80), bool)
    obj[5:25, 5:25], alike[30:55, 40:65] = True, True
    return image, obj, alike


def test_suppression_of_sine_results():
    ids = Instances((2, 3))
    ids.pred_masks = torch.tensor([[[1, 1, 0], [1, 1, 0]], [[0, 1, 1], [0, 0, 0]]]).bool()
    ids.pred_ids = torch.tensor([0, NEGATIVE_ID])
    ids.scores = torch.tensor([0.9, 0.8])
    inst = Instances((2, 3))
    inst.pred_classes = torch.tensor([3, 4, 3])
    sem = torch.tensor([[[0.9, 0.6, 0.2], [0.9, 0.1, 0.1]], [[0.1, 0.8, 0.9], [0.0, 0.0, 0.0]]])
    out = suppress_negatives({"id": ids, "instances": inst, "sem_seg": sem,
                              "sem_seg_classes": torch.tensor([3, 4])}, negative_label=4)
    assert out["id"].pred_ids.tolist() == [0]
    assert out["id"].pred_masks[0].tolist() == [[True, False, False], [True, True, False]]
    assert out["instances"].pred_classes.tolist() == [3, 3]
    assert out["sem_seg_classes"].tolist() == [3]
    torch.testing.assert_close(out["sem_seg"][0], torch.tensor([[0.9, 0.0, 0.0], [0.9, 0.1, 0.1]]))


@pytest.mark.parametrize("config,opts", [(None, TINY_MODEL_OPTS),
                                         ("configs/segic/Base-SegIC.yaml", TINY_SEGIC_OPTS)],
                         ids=["SINE", "SegIC"])
def test_negatives_are_never_results_and_change_nothing_when_absent(config, opts):
    if config is not None:
        pytest.importorskip("segment_anything", reason="SegIC needs the segic extra")
    torch.manual_seed(0)
    predictor = InContextPredictor(get_sine_cfg(config, opts))
    image, obj, alike = look_alikes()
    predictor.set_reference(image, [obj], labels=[3])
    plain = predictor.predict(image, outputs={"id", "sem_seg"})
    predictor.set_reference(image, [obj], labels=[3], negatives=[])
    empty = predictor.predict(image, outputs={"id", "sem_seg"})
    assert torch.equal(plain["id"].pred_masks, empty["id"].pred_masks)
    predictor.set_reference(image, [obj], labels=[3], negatives=[alike])
    out = predictor.predict(image, outputs={"id", "sem_seg"})
    assert out["id"].pred_ids.tolist() == [0]
    assert out["sem_seg_classes"].tolist() == [3]
    with pytest.raises(ValueError, match="same height and width as their image"):
        predictor.set_reference(image, [obj], negatives=[alike[:10]])


def test_segic_negatives_are_other_entity_tokens():
    pytest.importorskip("segment_anything", reason="SegIC needs the segic extra")
    torch.manual_seed(0)
    model = InContextPredictor(get_sine_cfg("configs/segic/Base-SegIC.yaml",
                                            TINY_SEGIC_OPTS)).model
    S = model.image_size
    feats = model.encode(torch.randn(1, 3, S, S))
    masks = torch.zeros(3, S, S, dtype=torch.bool)
    masks[0, :40, :40], masks[1, 50:, 50:], masks[2, :30, 60:] = True, True, True
    tokens = model.reference_tokens(feats, [masks[:2]], [torch.tensor([0, 1])],
                                    negatives=[masks[2:]])
    assert tokens.negative_prototypes.shape == (1, feats["dinov2"].shape[1])
    plain = model.decode(feats["dinov2"][0], tokens.prototypes, None)
    with_neg = model.decode(feats["dinov2"][0], tokens.prototypes, None,
                            negatives=tokens.negative_prototypes)
    n, t, _ = plain.instruction_tokens.shape
    assert with_neg.instruction_tokens.shape[:2] == (n, t + 1)
    expected = model.inst_proj(tokens.negative_prototypes[0]) + model.inst_type_embed.weight[0]
    for k in range(n):  # the same "another entity" token for every entity, after its own
        torch.testing.assert_close(with_neg.instruction_tokens[k, -1], expected)
        torch.testing.assert_close(with_neg.instruction_tokens[k, :t], plain.instruction_tokens[k])


def test_image_cli_and_app_take_negative_masks(tmp_path):
    from PIL import Image

    from demo.app import segment
    from demo.demo import main

    image, obj, alike = look_alikes()
    Image.fromarray(image).save(tmp_path / "ref.png")
    Image.fromarray(obj.astype(np.uint8) * 255).save(tmp_path / "obj.png")
    Image.fromarray(alike.astype(np.uint8) * 255).save(tmp_path / "alike.png")
    torch.manual_seed(0)
    main(["--ref-image", str(tmp_path / "ref.png"), "--ref-mask", str(tmp_path / "obj.png"),
          "--neg-mask", str(tmp_path / "alike.png"), "--input", str(tmp_path / "ref.png"),
          "--output", str(tmp_path / "out"), "--device", "cpu", "--opts", *TINY_MODEL_OPTS])
    arrays = np.load(tmp_path / "out" / "ref_masks.npz")
    assert arrays["id_ids"].tolist() == [0]
    assert arrays["semantic_classes"].tolist() == [0]

    predictor = InContextPredictor(get_sine_cfg(None, TINY_MODEL_OPTS))
    editor = {"background": image, "layers": [], "composite": image}
    *_, status = segment(predictor, editor, obj.astype(np.uint8), image, 0.5, None,
                         negative_mask=alike.astype(np.uint8))
    assert "1 reference object(s)" in status
    assert predictor.references.negative_label == 1
