"""ViTs on timm's modules (MODEL.DINOV2.VIT): DINOv2 (+registers), DINOv3, CLIP.

Random weights and tiny shapes; checkpoints are generated here with the official key names
(written out below, independently of the loaders) so that each loader is checked against the
layout users download.
"""
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from torch import nn

from sine.config import get_sine_cfg
from sine.modeling.backbone.dinov2 import build_dinov2_vit
from sine.modeling.backbone.timm_vit import (
    build_timm_clip,
    build_timm_dinov2,
    build_timm_dinov3,
)
from sine.modeling.backbone.vit_builder import build_vit, load_vit_checkpoint

DIM, HEADS = 48, 2


def _randomise(module: nn.Module, seed: int = 0) -> None:
    """Every parameter random with a visible effect (LayerScale 1e-5 would hide the blocks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _images(h, w, n=2, seed=1):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- DINOv2 on timm modules
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("ffn", ["mlp", "swiglufused"])
def test_timm_dinov2_equals_hand_written(fast, ffn):
    """Same weights (the official key layout, ViT-g's w12/w3 included) -> the same features,
    at a grid other than the stored one (so the offset-0.1 interpolation is exercised)."""
    ours = build_dinov2_vit("x", embed_dim=DIM, depth=2, num_heads=HEADS, ffn_layer=ffn)
    _randomise(ours)
    timm_vit = build_timm_dinov2("x", embed_dim=DIM, depth=2, num_heads=HEADS, ffn_layer=ffn)
    timm_vit.load_state_dict(ours.state_dict(), strict=True)
    for m in [*ours.modules(), timm_vit]:
        if hasattr(m, "fast_inference"):
            m.fast_inference = fast
    x = _images(14 * 5, 14 * 3)
    with torch.no_grad():
        expected, actual = ours(x), timm_vit(x)
    assert actual.shape == (2, DIM, 5, 3)
    assert torch.allclose(actual, expected, atol=1e-6, rtol=0)


def _official_dinov2_keys(depth, registers, ffn="mlp"):
    """The parameter names and shapes of dinov2_vit*14[_reg4]_pretrain.pth (grid 37 + cls)."""
    hidden = 4 * DIM
    shapes = {"cls_token": (1, 1, DIM), "pos_embed": (1, 37 * 37 + 1, DIM),
              "mask_token": (1, DIM), "patch_embed.proj.weight": (DIM, 3, 14, 14),
              "patch_embed.proj.bias": (DIM,), "norm.weight": (DIM,), "norm.bias": (DIM,)}
    if registers:
        shapes["register_tokens"] = (1, registers, DIM)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (DIM,), b + "norm1.bias": (DIM,),
            b + "attn.qkv.weight": (3 * DIM, DIM), b + "attn.qkv.bias": (3 * DIM,),
            b + "attn.proj.weight": (DIM, DIM), b + "attn.proj.bias": (DIM,),
            b + "ls1.gamma": (DIM,), b + "norm2.weight": (DIM,), b + "norm2.bias": (DIM,),
            b + "mlp.fc1.weight": (hidden, DIM), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (DIM, hidden), b + "mlp.fc2.bias": (DIM,),
            b + "ls2.gamma": (DIM,),
        })
    g = torch.Generator().manual_seed(3)
    return {k: torch.randn(s, generator=g) * 0.2 for k, s in shapes.items()}


def test_dinov2_with_registers_loads_official_layout_and_inserts_registers_after_pos(tmp_path):
    """dinov2_*_reg4 semantics: pos-embed added to [cls, patches] (bicubic to ``size``,
    antialiased, offset 0), then the registers go after cls and are dropped from the output."""
    state = _official_dinov2_keys(depth=2, registers=4)
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(state, path)
    vit = build_timm_dinov2("x", embed_dim=DIM, depth=2, num_heads=HEADS, num_register_tokens=4,
                            interpolate_offset=0.0, interpolate_antialias=True)
    load_vit_checkpoint(vit, str(path))
    assert torch.equal(vit.register_tokens, state["register_tokens"])

    x = _images(14 * 4, 14 * 6)
    with torch.no_grad():
        tokens = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                          stride=14).flatten(2).transpose(1, 2)
        grid = state["pos_embed"][:, 1:].reshape(1, 37, 37, DIM).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(4, 6), mode="bicubic", antialias=True)
        pos = torch.cat([state["pos_embed"][:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
        tokens = torch.cat([state["cls_token"].expand(2, -1, -1), tokens], dim=1) + pos
        tokens = torch.cat([tokens[:, :1], state["register_tokens"].expand(2, -1, -1),
                            tokens[:, 1:]], dim=1)
        for blk in vit.blocks:
            tokens = blk(tokens)
        expected = tokens[:, 5:].transpose(1, 2).reshape(2, DIM, 4, 6)
        assert torch.allclose(vit(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("blocks.1.ls2.gamma"), "missing keys (1): blocks.1.ls2.gamma"),
    (lambda s: s.update(extra=torch.zeros(1)), "unexpected keys (1): extra"),
    (lambda s: s.update(cls_token=torch.zeros(1, 1, DIM + 1)), "cls_token: checkpoint"),
    (lambda s: s.pop("register_tokens"), "missing keys (1): register_tokens"),
])
def test_dinov2_checkpoint_misfits_are_errors(tmp_path, change, message):
    state = _official_dinov2_keys(depth=2, registers=4)
    change(state)
    torch.save(state, tmp_path / "w.pth")
    vit = build_timm_dinov2("x", embed_dim=DIM, depth=2, num_heads=HEADS, num_register_tokens=4)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_vit_checkpoint(vit, str(tmp_path / "w.pth"))


def test_plain_dinov2_refuses_a_register_checkpoint(tmp_path):
    torch.save(_official_dinov2_keys(depth=1, registers=4), tmp_path / "reg.pth")
    vit = build_timm_dinov2("x", embed_dim=DIM, depth=1, num_heads=HEADS)
    with pytest.raises(ValueError, match="register_tokens"):
        load_vit_checkpoint(vit, str(tmp_path / "reg.pth"))


def test_cached_pos_encoding_follows_the_weights():
    vit = build_timm_dinov2("x", embed_dim=DIM, depth=1, num_heads=HEADS).eval()
    vit.requires_grad_(False)
    first = vit.cached_pos_encoding(5, 7)
    assert vit.cached_pos_encoding(5, 7) is first
    with torch.no_grad():
        vit.pos_embed.add_(1.0)
    assert torch.allclose(vit.cached_pos_encoding(5, 7), vit.interpolate_pos_encoding(5, 7))
    assert not torch.allclose(vit.cached_pos_encoding(5, 7), first)


# ---------------------------------------------------------------- DINOv3
def _official_dinov3_keys(depth, dim=DIM, heads=HEADS):
    """Keys of the DINOv3 hub checkpoints (dinov3_vit*16_pretrain_lvd1689m-*.pth)."""
    hidden, head_dim = 4 * dim, dim // heads
    shapes = {"cls_token": (1, 1, dim), "storage_tokens": (1, 4, dim), "mask_token": (1, dim),
              "patch_embed.proj.weight": (dim, 3, 16, 16), "patch_embed.proj.bias": (dim,),
              "rope_embed.periods": (head_dim // 4,), "norm.weight": (dim,), "norm.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.qkv.bias_mask": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "ls1.gamma": (dim,), b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "mlp.fc1.weight": (hidden, dim), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,),
            b + "ls2.gamma": (dim,),
        })
    g = torch.Generator().manual_seed(4)
    state = {k: torch.randn(s, generator=g) * 0.2 for k, s in shapes.items()}
    for i in range(depth):  # the key third of the bias is masked (zero) in released weights
        mask = torch.ones(3 * dim)
        mask[dim:2 * dim] = 0
        state[f"blocks.{i}.attn.qkv.bias_mask"] = mask
        state[f"blocks.{i}.attn.qkv.bias"] *= mask
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_dinov3_loads_official_hub_layout(tmp_path, suffix):
    state = _official_dinov3_keys(depth=2)
    path = str(tmp_path / f"dinov3_vits16_pretrain{suffix}")
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file
        save_file(state, path)
    vit = build_timm_dinov3("x", embed_dim=DIM, depth=2, num_heads=HEADS)
    load_vit_checkpoint(vit, path)
    assert torch.equal(vit.reg_token, state["storage_tokens"])
    assert torch.equal(vit.blocks[1].gamma_2, state["blocks.1.ls2.gamma"])
    assert torch.equal(vit.blocks[0].attn.q_bias, state["blocks.0.attn.qkv.bias"][:DIM])
    assert torch.equal(vit.blocks[0].attn.v_bias, state["blocks.0.attn.qkv.bias"][2 * DIM:])
    with torch.no_grad():
        out = vit(_images(16 * 3, 16 * 5))
    assert out.shape == (2, DIM, 3, 5)


def test_dinov3_checkpoint_misfits_are_errors(tmp_path):
    state = _official_dinov3_keys(depth=2)
    state.pop("blocks.1.mlp.fc2.bias")
    torch.save(state, tmp_path / "w.pth")
    vit = build_timm_dinov3("x", embed_dim=DIM, depth=2, num_heads=HEADS)
    with pytest.raises(ValueError, match=r"missing keys \(1\): blocks.1.mlp.fc2.bias"):
        load_vit_checkpoint(vit, str(tmp_path / "w.pth"))
    torch.save(_official_dinov2_keys(depth=2, registers=0), tmp_path / "v2.pth")
    with pytest.raises(ValueError, match="storage_tokens"):
        load_vit_checkpoint(vit, str(tmp_path / "v2.pth"))


def test_dinov3_features_use_rope_positions_and_patch_16():
    """RoPE: the same patch content at two positions gives different features; sizes must be
    multiples of 16, not 14."""
    torch.manual_seed(0)
    vit = build_timm_dinov3("x", embed_dim=DIM, depth=1, num_heads=HEADS).eval()
    _randomise(vit)
    x = _images(32, 32, n=1).repeat(1, 1, 1, 2)  # two identical 32x32 halves
    with torch.no_grad():
        out = vit(x)
    assert out.shape == (1, DIM, 2, 4)
    assert not torch.allclose(out[..., :2], out[..., 2:], atol=1e-4)
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        vit(_images(28, 28, n=1))


# ---------------------------------------------------------------- CLIP
def _official_clip_keys(depth, grid=4, patch=14, embed=32):
    """OpenAI CLIP state dict (image tower ``visual.*`` and a few text-tower keys)."""
    shapes = {"visual.class_embedding": (DIM,), "visual.positional_embedding": (grid**2 + 1, DIM),
              "visual.conv1.weight": (DIM, 3, patch, patch), "visual.ln_pre.weight": (DIM,),
              "visual.ln_pre.bias": (DIM,), "visual.ln_post.weight": (DIM,),
              "visual.ln_post.bias": (DIM,), "visual.proj": (DIM, embed),
              "token_embedding.weight": (100, embed), "positional_embedding": (77, embed),
              "transformer.resblocks.0.attn.in_proj_weight": (3 * embed, embed),
              "text_projection": (embed, embed), "logit_scale": ()}
    for i in range(depth):
        b = f"visual.transformer.resblocks.{i}."
        shapes.update({
            b + "ln_1.weight": (DIM,), b + "ln_1.bias": (DIM,),
            b + "attn.in_proj_weight": (3 * DIM, DIM), b + "attn.in_proj_bias": (3 * DIM,),
            b + "attn.out_proj.weight": (DIM, DIM), b + "attn.out_proj.bias": (DIM,),
            b + "ln_2.weight": (DIM,), b + "ln_2.bias": (DIM,),
            b + "mlp.c_fc.weight": (4 * DIM, DIM), b + "mlp.c_fc.bias": (4 * DIM,),
            b + "mlp.c_proj.weight": (DIM, 4 * DIM), b + "mlp.c_proj.bias": (DIM,),
        })
    g = torch.Generator().manual_seed(5)
    return {k: torch.randn(s, generator=g) * 0.2 for k, s in shapes.items()}


def _openai_clip_patch_tokens(state, x, depth):
    """The OpenAI CLIP image tower up to the last block (nn.MultiheadAttention, QuickGELU)."""
    v = {k[len("visual."):]: t for k, t in state.items() if k.startswith("visual.")}
    tokens = F.conv2d(x, v["conv1.weight"], stride=14).flatten(2).transpose(1, 2)
    cls = v["class_embedding"].expand(x.shape[0], 1, -1)
    tokens = torch.cat([cls, tokens], dim=1) + v["positional_embedding"]
    tokens = F.layer_norm(tokens, (DIM,), v["ln_pre.weight"], v["ln_pre.bias"])
    for i in range(depth):
        b = f"transformer.resblocks.{i}."
        attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        attn.load_state_dict({k: v[b + "attn." + k] for k in
                              ("in_proj_weight", "in_proj_bias", "out_proj.weight",
                               "out_proj.bias")})
        h = F.layer_norm(tokens, (DIM,), v[b + "ln_1.weight"], v[b + "ln_1.bias"])
        tokens = tokens + attn(h, h, h, need_weights=False)[0]
        h = F.layer_norm(tokens, (DIM,), v[b + "ln_2.weight"], v[b + "ln_2.bias"])
        h = F.linear(h, v[b + "mlp.c_fc.weight"], v[b + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)
        tokens = tokens + F.linear(h, v[b + "mlp.c_proj.weight"], v[b + "mlp.c_proj.bias"])
    return tokens[:, 1:]


@pytest.mark.parametrize("torchscript", [False, True], ids=["state_dict", "torchscript"])
def test_clip_loads_openai_layout_and_matches_the_openai_tower(tmp_path, torchscript):
    state = _official_clip_keys(depth=2)
    path = str(tmp_path / "ViT-L-14.pt")
    if torchscript:  # OpenAI ships TorchScript archives
        torch.jit.save(torch.jit.script(_holder(state)), path)
    else:
        torch.save(state, path)
    vit = build_timm_clip("x", embed_dim=DIM, depth=2, num_heads=HEADS, img_size=56,
                          interpolate_offset=0.0)
    load_vit_checkpoint(vit, path)
    x = _images(56, 56)
    with torch.no_grad():
        expected = _openai_clip_patch_tokens(state, x, depth=2)
        actual = vit(x)
    assert actual.shape == (2, DIM, 4, 4)
    assert torch.allclose(actual.flatten(2).transpose(1, 2), expected, atol=1e-5, rtol=0)


def _holder(state):
    """A scriptable module tree whose state dict is ``state``."""
    class Holder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Holder()
    for key, value in state.items():
        *path, name = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, Holder())
            module = getattr(module, part)
        module.register_parameter(name, nn.Parameter(value, requires_grad=False))
    return root


def test_clip_checkpoint_without_a_block_is_an_error(tmp_path):
    state = {k: v for k, v in _official_clip_keys(depth=2).items()
             if ".resblocks.1." not in k or not k.startswith("visual.")}
    torch.save(state, tmp_path / "w.pt")
    vit = build_timm_clip("x", embed_dim=DIM, depth=2, num_heads=HEADS, img_size=56)
    with pytest.raises(ValueError, match=r"missing keys \(12\): blocks.1"):
        load_vit_checkpoint(vit, str(tmp_path / "w.pt"))


# ---------------------------------------------------------------- selection by config
TINY_SINE = [
    "MODEL.DEVICE", "cpu", "MODEL.DINOV2.EMBED_DIM", str(DIM), "MODEL.DINOV2.DEPTH", "1",
    "MODEL.DINOV2.NUM_HEADS", str(HEADS), "MODEL.SINE.FEAT_CHANS", "32",
    "MODEL.SINE.MASK_DIM", "32", "MODEL.SINE.NHEADS", "2", "MODEL.SINE.DIM_FEEDFORWARD", "64",
    "MODEL.SINE.DEC_LAYERS", "1", "MODEL.SINE.NUM_QUERIES", "5",
]
VITS = {
    "timm_dinov2_reg4": ["MODEL.DINOV2.VIT", "timm_dinov2", "MODEL.DINOV2.NUM_REGISTER_TOKENS",
                         "4", "MODEL.SINE.PAD_SIZE", "112"],
    "timm_dinov3": ["MODEL.DINOV2.VIT", "timm_dinov3", "MODEL.DINOV2.PATCH_SIZE", "16",
                    "MODEL.SINE.PAD_SIZE", "128"],
    "timm_clip": ["MODEL.DINOV2.VIT", "timm_clip", "MODEL.DINOV2.IMG_SIZE", "224",
                  "MODEL.DINOV2.INTERPOLATE_OFFSET", "0.0", "MODEL.SINE.PAD_SIZE", "112"],
}


@pytest.mark.parametrize("name", sorted(VITS))
def test_sine_builds_and_segments_with_each_vit(name):
    from sine.modeling.backbone.timm_vit import TimmDINOv3, TimmViT

    cfg = get_sine_cfg(opts=TINY_SINE + VITS[name])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    vit = model.image_encoder.encoder
    assert isinstance(vit, TimmDINOv3 if name == "timm_dinov3" else TimmViT)
    patch = cfg.MODEL.DINOV2.PATCH_SIZE
    feats = model.image_encoder(torch.zeros(1, 3, 4 * patch, 2 * patch))
    assert feats["neck"].shape == (1, 32, 4, 2)
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)
    masks = torch.zeros(1, 60, 80, dtype=torch.bool)
    masks[0, 10:40, 20:60] = True
    from detectron2.structures import Instances
    ref = {"image": image, "instances": Instances((60, 80), gt_masks=masks,
                                                  gt_classes=torch.tensor([1]))}
    with torch.no_grad():
        (result,) = model([{"image": image, "references": [ref]}])
    assert result["sem_seg"].shape == (1, 60, 80)


def test_unknown_vit_name_is_an_error():
    cfg = get_sine_cfg(opts=TINY_SINE + ["MODEL.DINOV2.VIT", "dinov4"])
    with pytest.raises(ValueError, match="Unknown MODEL.DINOV2.VIT 'dinov4'"):
        build_vit(cfg)


@pytest.mark.parametrize("arch", ["vit_small", "vit_base", "vit_large", "vit_giant2"])
def test_timm_dinov2_presets_have_the_official_layout(arch):
    """Full-size S/B/L/g (built on the meta device: no memory) have the hand-written ViT's
    parameter names and shapes, i.e. those of dinov2_vit{s,b,l,g}14_pretrain.pth."""
    ffn = "swiglufused" if arch == "vit_giant2" else "mlp"
    with torch.device("meta"):
        ours = build_dinov2_vit(arch, ffn_layer=ffn).state_dict()
        timm_vit = build_timm_dinov2(arch, ffn_layer=ffn).state_dict()
    renamed = {k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2."): v.shape
               for k, v in ours.items()}
    assert {k: v.shape for k, v in timm_vit.items()} == renamed
