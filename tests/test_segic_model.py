"""SegIC without the golden data: text on/off and its errors, the inference surface and the
training forward on a tiny random-weight model."""
import os
import random

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Instances

pytest.importorskip("segment_anything", reason="SegIC needs the segic extra")
pytest.importorskip("transformers", reason="SegIC needs the segic extra")

from sine.config import get_sine_cfg  # noqa: E402
from sine.modeling.in_context import ImageGeometry  # noqa: E402
from sine.modeling.segic.text_encoder import build_clip_tokenizer  # noqa: E402
from tests.tiny_model import TINY_SEGIC_OPTS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "segic", "Base-SegIC.yaml")


def tiny_segic(*opts):
    torch.manual_seed(0)
    cfg = get_sine_cfg(BASE, TINY_SEGIC_OPTS + list(opts))
    return META_ARCH_REGISTRY.get("SegIC")(cfg).eval()


def square(size, box):
    mask = torch.zeros(size, size, dtype=torch.bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def test_missing_clip_weights_name_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        tiny_segic("MODEL.SEGIC.USE_TEXT", "True", "MODEL.SEGIC.TEXT_ENCODER.WEIGHTS",
                   str(tmp_path))
    assert str(tmp_path / "config.json") in str(err.value)
    assert "openai/clip-vit-large-patch14" in str(err.value)
    with pytest.raises(FileNotFoundError, match="MODEL.SEGIC.USE_TEXT False"):
        tiny_segic("MODEL.SEGIC.USE_TEXT", "True")


def test_missing_tokenizer_file_is_named():
    with pytest.raises(FileNotFoundError, match="no_such_bpe.txt.gz"):
        build_clip_tokenizer("/nonexistent/no_such_bpe.txt.gz")


def test_offline_tokenizer_is_clip_bpe():
    ids = build_clip_tokenizer()(["a photo of a dog"])["input_ids"][0]
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 7


def test_without_text_there_is_no_text_slot_and_segmentation_works():
    model = tiny_segic()
    S = model.image_size
    image = torch.randint(0, 256, (3, 90, S), dtype=torch.uint8)
    feats = model.encode(model.preprocess_image(image)[None])
    masks = torch.stack([square(S, (10, 10, 40, 40)), square(S, (50, 60, 80, 100))])
    tokens = model.reference_tokens(feats, [masks], [torch.tensor([3, 5])])
    assert tokens.text_pooled is None
    dec = model.decode(feats["dinov2"][0], tokens.prototypes, None)
    # point + pad + 2 cross-entity visual tokens, no text token
    assert dec.sparse_embeddings.shape[:2] == (2, 4)
    result = model.segment(feats, tokens, ImageGeometry((S, S), (90, S), (45, 56)),
                           outputs={"id", "sem_seg"})
    inst = result["id"]
    assert isinstance(inst, Instances) and inst.pred_masks.shape == (2, 45, 56)
    assert inst.pred_ids.tolist() == [0, 1] and inst.pred_classes.tolist() == [3, 5]
    assert ((inst.scores >= 0.5) & (inst.scores <= 1)).all()
    assert result["sem_seg_classes"].tolist() == [3, 5]
    assert result["sem_seg"].shape == (2, 45, 56)
    with pytest.raises(ValueError, match="instances"):
        model.segment(feats, tokens, ImageGeometry((S, S), (90, S), (45, 56)),
                      outputs={"instances"})
    assert model.supported_outputs() == frozenset({"id", "sem_seg"})
    geometry = ImageGeometry((S, S), (90, S), (45, 56))
    two = {k: v.repeat(2, 1, 1, 1) for k, v in feats.items()}
    with pytest.raises(ValueError, match="one target"):
        model.segment(two, tokens, geometry, {"id"})
    with pytest.raises(TypeError, match="SegICReferenceTokens"):
        model.segment(feats, object(), geometry, {"id"})


def test_empty_prompt_embedding_fills_the_text_slot(tmp_path):
    width_text = 768
    embedding = torch.linspace(-1, 1, width_text)
    path = tmp_path / "empty.pt"
    torch.save(embedding, path)
    model = tiny_segic("MODEL.SEGIC.TEXT_ENCODER.EMPTY_PROMPT_EMBEDDING", str(path))
    S = model.image_size
    feats = model.encode(torch.zeros(1, 3, S, S))
    tokens = model.reference_tokens(feats, [square(S, (0, 0, 30, 30))[None]], [torch.zeros(1)])
    assert torch.equal(tokens.text_pooled, embedding[None])
    dec = model.decode(feats["dinov2"][0], tokens.prototypes, tokens.text_pooled)
    assert dec.sparse_embeddings.shape[1] == 4  # point, pad, text, visual
    torch.testing.assert_close(dec.instruction_tokens[:, 0], model.prompt_proj(embedding)[None])


def test_training_forward_returns_halved_pass_losses_and_trains_the_decoder():
    model = tiny_segic().train()
    random.seed(0)  # the official recipe's box / cross-entity / text draws
    S = model.image_size
    image = torch.randint(0, 256, (3, S, S), dtype=torch.uint8)
    masks = torch.stack([square(S, (10, 10, 50, 50)), square(S, (60, 50, 100, 90))])

    def instances(m, ids):
        inst = Instances((S, S))
        inst.gt_masks = m
        inst.gt_classes = torch.zeros(len(m), dtype=torch.long)
        inst.ins_ids = torch.tensor(ids)
        return inst

    # The target lists the entities in another order: they are matched by instance id.
    batch = [{"image": image, "instances": instances(masks.flip(0), [8, 4]), "class_name": None,
              "references": [{"image": image.flip(-1),
                              "instances": instances(masks.flip(-1), [4, 8])}]}]
    assert torch.equal(model.prepare_pairs(batch).tar_masks[0], masks)
    losses = model(batch)
    assert set(losses) == {"loss_mask", "loss_dice", "loss_mask_reverse", "loss_dice_reverse"}
    sum(losses.values()).backward()
    assert model.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight.grad is not None
    assert all(p.grad is None for p in model.encoder.parameters())
    assert not model.encoder.training  # the frozen tower stays in eval mode


def test_class_names_from_config_become_prompts():
    model = tiny_segic("MODEL.SEGIC.CLASS_NAMES", "['dog', 'cat']")
    S = model.image_size
    feats = model.encode(torch.zeros(2, 3, S, S))
    masks = [square(S, (0, 0, 30, 30))[None], square(S, (40, 40, 90, 90))[None]]
    tokens = model.reference_tokens(feats, masks, [torch.tensor([1]), torch.tensor([7])])
    assert tokens.names == ["cat", None]
    assert model.prompts_of(tokens.names, 2) == ["a photo of a cat",
                                                 "please segment the instances"]


def test_text_tower_loads_from_a_full_clip_directory(tmp_path):
    """The released openai/clip-vit-large-patch14 directory holds the whole CLIP model (text and
    vision, CLIPConfig); the text tower and its pooled output come out of it unchanged."""
    from transformers import CLIPConfig, CLIPModel

    from sine.modeling.segic.text_encoder import SegICTextEncoder, load_clip_text_model

    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                bos_token_id=0, eos_token_id=2, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=28, patch_size=14)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    full.save_pretrained(tmp_path)
    encoder = SegICTextEncoder(load_clip_text_model(str(tmp_path)), build_clip_tokenizer())
    ids, mask = encoder.tokenize(["a photo of a dog", ""])
    with torch.no_grad():
        expected = full.text_model(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(encoder(["a photo of a dog", ""]), expected)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        load_clip_text_model(str(tmp_path))
