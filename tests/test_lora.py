"""LoRA through peft on the DINOv2 ViT (sine/modeling/lora.py)."""
import pytest
import torch

from sine.modeling.backbone.dinov2 import DinoVisionTransformer
from sine.modeling.lora import (
    add_lora,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)


def _vit(seed=0):
    torch.manual_seed(seed)
    vit = DinoVisionTransformer(embed_dim=48, depth=2, num_heads=2).eval()
    vit.requires_grad_(False)
    return vit


def _perturb(vit):
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def test_only_the_attention_lora_weights_train_and_start_as_identity():
    vit = _vit()
    x = torch.randn(1, 3, 56, 56)
    before = vit(x)
    add_lora(vit, rank=4, alpha=4.0, target_modules=["qkv"])
    trainable = sorted(n for n, p in vit.named_parameters() if p.requires_grad)
    assert trainable == [f"blocks.{i}.attn.qkv.lora_{ab}.default.weight"
                         for i in range(2) for ab in "AB"]
    assert vit.blocks[0].attn.qkv.lora_A["default"].weight.shape == (4, 48)
    assert torch.allclose(vit(x), before)  # B = 0 at start: the adapted ViT equals the base
    vit(x).sum().backward()
    assert vit.blocks[0].attn.qkv.lora_A["default"].weight.grad is not None


def test_merged_lora_gives_the_same_features_and_unmerges_exactly():
    vit = add_lora(_vit(), rank=4, alpha=8.0, target_modules=["qkv", "proj"])
    _perturb(vit)
    x = torch.randn(1, 3, 56, 56)
    adapted = vit(x)
    base_weight = vit.blocks[0].attn.qkv.base_layer.weight.clone()
    merge_lora(vit)
    assert not torch.equal(vit.blocks[0].attn.qkv.base_layer.weight, base_weight)
    assert torch.allclose(vit(x), adapted, atol=1e-5)
    unmerge_lora(vit)
    assert torch.allclose(vit.blocks[0].attn.qkv.base_layer.weight, base_weight, atol=1e-6)


def test_adapter_weights_round_trip_onto_a_fresh_vit():
    vit = add_lora(_vit(), rank=4, alpha=4.0, target_modules=["qkv"])
    _perturb(vit)
    state = lora_state_dict(vit)
    assert all("lora_" in k for k in state) and len(state) == 4
    fresh = add_lora(_vit(), rank=4, alpha=4.0, target_modules=["qkv"])
    load_lora_state_dict(fresh, state)
    x = torch.randn(1, 3, 56, 56)
    assert torch.allclose(fresh(x), vit(x))
    with pytest.raises(ValueError, match="does not fit"):
        load_lora_state_dict(add_lora(_vit(), 8, 8.0, ["qkv"]),
                             {k: v for k, v in list(state.items())[:2]})


def test_unknown_target_is_a_clear_error():
    with pytest.raises(ValueError, match="TARGET_MODULES"):
        add_lora(_vit(), rank=4, alpha=4.0, target_modules=["query"])
