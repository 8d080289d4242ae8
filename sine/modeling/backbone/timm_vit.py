"""Vision transformers built on timm's modules: DINOv2 (optionally with registers), DINOv3, CLIP.

Every encoder here has the interface of the hand-written :class:`~.dinov2.DinoVisionTransformer`
that :class:`~.dinov2_encoder.DINOv2Encoder` relies on:

* ``forward(x)``: (B, 3, H, W) normalised images (H, W multiples of ``patch_size``) ->
  (B, C, H/p, W/p) patch features of the last block (prefix tokens dropped);
* ``embed_dim``, ``patch_size``, a settable ``fast_inference`` (fused SDPA attention and cached
  positional tables; False = unfused attention, recomputed every call);
* ``unused_parameters()``: parameters that never receive a gradient from these features;
* ``load_official_checkpoint(path)``: the backbone's released checkpoint layout, read by name
  with strict key checking (missing, unexpected and wrongly shaped keys are errors).

Where timm's behaviour differs from the official DINOv2 forward that SINE's numbers depend on,
the official piece is kept as an option (see :func:`interpolate_patch_pos_embed`, ``output_norm``).
"""
import logging
import math
import os
import zipfile
from functools import partial
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import GluMlp, Mlp, PatchEmbed
from timm.models.eva import Eva
from timm.models.eva import checkpoint_filter_fn as eva_checkpoint_filter_fn
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .dinov2 import (
    DINOV2_ARCHS,
    PosTableCache,
    load_state_dict_strict,
    read_dinov2_state_dict,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_ARCHS",
    "DINOV3_ARCHS",
    "TimmDINOv3",
    "TimmViT",
    "build_timm_clip",
    "build_timm_dinov2",
    "build_timm_dinov3",
    "interpolate_patch_pos_embed",
    "read_state_dict_file",
]

# name -> (embed_dim, depth, num_heads, ffn): the released DINOv3 distilled ViTs (patch 16,
# 4 storage tokens, 2-D RoPE).
DINOV3_ARCHS: Dict[str, Tuple[int, int, int, str]] = {
    "vit_small": (384, 12, 6, "mlp"),
    "vit_small_plus": (384, 12, 6, "swiglu"),
    "vit_base": (768, 12, 12, "mlp"),
    "vit_large": (1024, 24, 16, "mlp"),
    "vit_huge_plus": (1280, 32, 20, "swiglu"),
}
# name -> (embed_dim, depth, num_heads): OpenAI CLIP image towers (ViT-L/14 in SINE's Table 9).
CLIP_ARCHS: Dict[str, Tuple[int, int, int]] = {
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}


def interpolate_patch_pos_embed(
    patch_pos: torch.Tensor, h: int, w: int, offset: float, antialias: bool
) -> torch.Tensor:
    """Resample a (1, g0*g0, C) patch pos-embed to an h x w grid -> (1, h*w, C), as DINOv2 does.

    ``offset > 0`` (DINOv2, 0.1): bicubic with ``scale_factor=((h + offset) / g0, (w + offset) /
    g0)``. PyTorch maps coordinates with the given factor, so this differs from ``size=(h, w)``;
    timm's ``resample_abs_pos_embed`` uses ``size=`` (and antialias), which would not reproduce
    the official features. ``offset == 0`` (DINOv2 with registers, CLIP): bicubic to ``size``.
    Computed in float32; at the stored grid size nothing is resampled.
    """
    g0 = math.isqrt(int(patch_pos.shape[1]))
    if g0 * g0 != patch_pos.shape[1]:
        raise ValueError(f"pos-embed of {patch_pos.shape[1]} patch tokens is not a square grid")
    if (h, w) == (g0, g0):
        return patch_pos
    grid = patch_pos.float().reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
    if offset:
        size_kwargs = {"scale_factor": ((h + offset) / g0, (w + offset) / g0)}
    else:
        size_kwargs = {"size": (h, w)}
    grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **size_kwargs)
    if grid.shape[-2:] != (h, w):
        raise RuntimeError(
            f"pos-embed interpolation gave {tuple(grid.shape[-2:])}, expected {(h, w)}"
        )
    return grid.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(patch_pos.dtype)


def _swiglu_packed(in_features: int, hidden_features: int, **kwargs) -> nn.Module:
    """DINOv2's fused SwiGLU (ViT-g) as timm's packed GLU MLP: silu(x1) * x2 -> fc2.

    DINOv2 shrinks the hidden size by 2/3 and rounds it up to a multiple of 8; timm's packed
    ``fc1`` holds both halves.
    """
    hidden = (int(hidden_features * 2 / 3) + 7) // 8 * 8
    kwargs.update(act_layer=nn.SiLU, gate_last=False)
    return GluMlp(in_features, hidden_features=2 * hidden, **kwargs)


def _load_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], path: str,
                 expected_format: str) -> None:
    """``load_state_dict(strict=True)`` with one error listing every misfit key."""
    load_state_dict_strict(model, state_dict, path, expected_format)
    logger.info("Loaded %s weights from %s (%d tensors).", type(model).__name__, path,
                len(state_dict))


def read_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """A flat tensor dict from ``.safetensors``, a ``torch.save`` file or a TorchScript archive.

    OpenAI's released CLIP files (``ViT-L-14.pt``) are TorchScript archives; their state dict is
    read without running any of their code.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if _is_torchscript_archive(path):
        obj = torch.jit.load(path, map_location="cpu").state_dict()
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__}).")
    for wrapper in ("model", "state_dict"):
        if wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    return dict(obj)


def _is_torchscript_archive(path: str) -> bool:
    """TorchScript zips hold ``<name>/constants.pkl``; ``torch.save`` zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


class _FastInferenceMixin:
    """``fast_inference`` toggles timm's fused attention in every block (SINE's switch)."""

    _fast_inference: bool = True

    @property
    def fast_inference(self) -> bool:
        return self._fast_inference

    @fast_inference.setter
    def fast_inference(self, enabled: bool) -> None:
        self._fast_inference = bool(enabled)
        for blk in self.blocks:
            blk.attn.fused_attn = self._fast_inference


class TimmViT(_FastInferenceMixin, VisionTransformer):
    """timm's ViT with absolute pos-embed: DINOv2 (+registers) or an OpenAI CLIP image tower.

    Parameter names are those of the official DINOv2 checkpoints (``cls_token``, ``pos_embed``
    with the cls entry, ``register_tokens``, ``mask_token``, ``patch_embed.proj``, ``blocks.<i>``,
    ``norm``), which timm's ViT shares, so SINE checkpoints load without renaming. Only the
    DINOv2 ViT-g SwiGLU keys differ (``mlp.w12/w3`` = timm's ``mlp.fc1/fc2``); official names are
    renamed on load. Registers are inserted after the pos-embed is added, as DINOv2 does (timm
    folds the cls pos-embed into ``cls_token`` instead, which changes the key layout).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        patch_size: int = 14,
        img_size: int = 518,
        init_values: Optional[float] = 1e-5,
        ffn_layer: str = "mlp",
        num_register_tokens: int = 0,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        output_norm: bool = False,
        checkpoint_format: str = "dinov2",
    ):
        """
        Args:
            embed_dim, depth, num_heads, mlp_ratio, patch_size, init_values: ViT shape;
                ``init_values`` None = no LayerScale (CLIP).
            img_size: pretraining resolution; the stored pos-embed grid is img_size / patch_size.
            ffn_layer: "mlp" (exact GELU; QuickGELU for CLIP) or "swiglufused" (DINOv2 ViT-g).
            num_register_tokens: DINOv2 register tokens (0 or 4).
            interpolate_offset, interpolate_antialias: see :func:`interpolate_patch_pos_embed`.
            output_norm: features after the final norm instead of before it (SINE: before).
            checkpoint_format: "dinov2" (official DINOv2 ``.pth``; LayerNorm eps 1e-6,
                ``mask_token``) or "openai_clip" (OpenAI CLIP; pre-norm, QuickGELU, eps 1e-5,
                no patch-embed bias).
        """
        if ffn_layer not in ("mlp", "swiglu", "swiglufused"):
            raise ValueError(f"Unknown ffn_layer {ffn_layer!r}; use 'mlp' or 'swiglufused'.")
        if checkpoint_format not in ("dinov2", "openai_clip"):
            raise ValueError(f"Unknown checkpoint_format {checkpoint_format!r}.")
        clip = checkpoint_format == "openai_clip"
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,
            global_pool="",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            init_values=init_values,
            class_token=True,
            pre_norm=clip,
            # Input sizes vary (any multiple of the patch); tokens come out flat (B, N, C).
            embed_layer=partial(PatchEmbed, strict_img_size=False),
            norm_layer=partial(nn.LayerNorm, eps=1e-5 if clip else 1e-6),
            act_layer="quick_gelu" if clip else nn.GELU,
            mlp_layer=Mlp if ffn_layer == "mlp" else _swiglu_packed,
        )
        self.patch_size = patch_size
        self.checkpoint_format = checkpoint_format
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        self.output_norm = output_norm
        if not clip:
            self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        if num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
            nn.init.normal_(self.register_tokens, std=1e-6)
        self.num_reg_tokens = num_register_tokens
        self.num_prefix_tokens = 1 + num_register_tokens
        self._pos_cache = PosTableCache()
        self.fast_inference = True
        self._register_load_state_dict_pre_hook(self._rename_official_keys)

    def unused_parameters(self) -> List[nn.Parameter]:
        """Parameters the patch features never depend on (frozen even when the ViT trains)."""
        unused = [self.mask_token] if hasattr(self, "mask_token") else []
        if not self.output_norm:
            unused += list(self.norm.parameters())
        return unused

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Positional embedding (1, 1 + h*w, C) of the cls token and an h x w patch grid."""
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = interpolate_patch_pos_embed(
            patch_pos, h, w, self.interpolate_offset, self.interpolate_antialias
        )
        return torch.cat([cls_pos, patch_pos], dim=1)

    def cached_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """:meth:`interpolate_pos_encoding`, cached per grid size on the fast path."""
        if not self.fast_inference:
            return self.interpolate_pos_encoding(h, w)
        return self._pos_cache.get(self.pos_embed, (h, w),
                                   lambda: self.interpolate_pos_encoding(h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, 3, H, W) normalised images, H and W multiples of the patch size.
        Returns:
            (B, C, H/p, W/p) last-block patch features (after the final norm when
            ``output_norm``), cls and register tokens dropped.
        """
        B, _, H, W = x.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"ViT input size {H}x{W} is not a multiple of the patch size {p}.")
        h, w = H // p, W // p
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)
        tokens = tokens + self.cached_pos_encoding(h, w).to(tokens.dtype)
        if self.num_reg_tokens:
            regs = self.register_tokens.expand(B, -1, -1)
            tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)
        tokens = self.norm_pre(tokens)
        for blk in self.blocks:
            tokens = blk(tokens)
        if self.output_norm:
            tokens = self.norm(tokens)
        patches = tokens[:, self.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(B, self.embed_dim, h, w)

    def _rename_official_keys(self, state_dict, prefix, *args) -> None:
        """Official DINOv2 ViT-g SwiGLU keys ``mlp.w12``/``mlp.w3`` -> timm's ``fc1``/``fc2``."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")
            if new != key:
                state_dict[new] = state_dict.pop(key)
        # Every grid size is recomputed from the new weights.
        self._pos_cache.entries.clear()

    def load_official_checkpoint(self, path: str) -> None:
        """Load an official DINOv2 ``.pth`` or OpenAI CLIP file; raise ValueError on any misfit."""
        if self.checkpoint_format == "dinov2":
            state_dict = read_dinov2_state_dict(path)
            self._rename_official_keys(state_dict, "")
            _load_strict(self, state_dict, path, _DINOV2_FORMAT)
        else:
            _load_strict(self, openai_clip_to_timm(read_state_dict_file(path)), path, _CLIP_FORMAT)


_DINOV2_FORMAT = (
    "Expected an official DINOv2 checkpoint (dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth): keys "
    "cls_token, pos_embed, mask_token, [register_tokens,] patch_embed.proj.*, blocks.<i>.*, "
    "norm.*, for the architecture set in MODEL.DINOV2 (ARCH, NUM_REGISTER_TOKENS, FFN_LAYER)."
)
_CLIP_FORMAT = (
    "Expected an OpenAI CLIP checkpoint (e.g. ViT-L-14.pt): image-tower keys visual.conv1.weight, "
    "visual.class_embedding, visual.positional_embedding, visual.ln_pre.*, "
    "visual.transformer.resblocks.<i>.{ln_1,attn.in_proj_*,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}.*,"
    " visual.ln_post.* (text-tower keys and visual.proj are not used by patch features)."
)
# OpenAI key fragment -> timm key fragment, applied in order.
_CLIP_KEY_FRAGMENTS = (
    ("conv1.", "patch_embed.proj."),
    ("transformer.resblocks.", "blocks."),
    ("ln_pre.", "norm_pre."),
    ("ln_post.", "norm."),
    ("ln_1.", "norm1."),
    ("ln_2.", "norm2."),
    ("attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.out_proj.", "attn.proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
)


def openai_clip_to_timm(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The image tower of an OpenAI CLIP state dict under :class:`TimmViT`'s names.

    Keeps ``visual.*`` only, minus ``visual.proj`` (the projection into the joint image-text
    space, which patch features do not pass through); the text tower is ignored. A file with no
    ``visual.*`` key at all is taken as an image tower saved without the prefix.
    """
    prefix = "visual." if any(k.startswith("visual.") for k in state_dict) else ""
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if key == "proj":
            continue
        if key == "class_embedding":
            key, value = "cls_token", value.reshape(1, 1, -1)
        elif key == "positional_embedding":
            key, value = "pos_embed", value.unsqueeze(0)
        for old, new in _CLIP_KEY_FRAGMENTS:
            key = key.replace(old, new)
        out[key] = value
    return out


class TimmDINOv3(_FastInferenceMixin, Eva):
    """DINOv3 ViT on timm's Eva: patch 16, 2-D RoPE (no absolute pos-embed), storage tokens.

    Parameter names are timm's (``reg_token``, ``gamma_1``, ``q_bias``/``v_bias``, ...); official
    hub checkpoints are converted on load by timm's own DINOv3 converter and then checked
    strictly. The RoPE needs no interpolation, so any grid of whole patches works.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        ffn_layer: str = "mlp",
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        img_size: int = 224,
        init_values: float = 1e-5,
        num_register_tokens: int = 4,
        output_norm: bool = False,
    ):
        if ffn_layer not in ("mlp", "swiglu"):
            raise ValueError(f"Unknown DINOv3 ffn_layer {ffn_layer!r}; use 'mlp' or 'swiglu'.")
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            num_classes=0,
            global_pool="",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            # Released checkpoints hold qkv.bias (its key part masked to zero).
            qkv_bias=True,
            swiglu_mlp=ffn_layer == "swiglu",
            swiglu_align_to=8 if ffn_layer == "swiglu" else 0,
            init_values=init_values,
            num_reg_tokens=num_register_tokens,
            use_abs_pos_emb=False,
            use_rot_pos_emb=True,
            rope_type="dinov3",
            rope_temperature=100,
            rope_rotate_half=True,
            use_fc_norm=False,
            dynamic_img_size=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-5),
        )
        self.patch_size = patch_size
        self.output_norm = output_norm
        self.fast_inference = True

    def unused_parameters(self) -> List[nn.Parameter]:
        return [] if self.output_norm else list(self.norm.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), H and W multiples of the patch size -> (B, C, H/p, W/p)."""
        H, W = x.shape[-2:]
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"DINOv3 input size {H}x{W} is not a multiple of the patch size {self.patch_size}."
            )
        return self.forward_intermediates(
            x, indices=1, norm=self.output_norm, output_fmt="NCHW", intermediates_only=True
        )[-1]

    def load_official_checkpoint(self, path: str) -> None:
        """Load an official DINOv3 hub checkpoint (``.pth`` or ``.safetensors``), strictly."""
        state_dict = read_state_dict_file(path)
        if "storage_tokens" not in state_dict:
            raise ValueError(f"{path} has no 'storage_tokens' key. {_DINOV3_FORMAT}")
        _load_strict(self, eva_checkpoint_filter_fn(state_dict, self), path, _DINOV3_FORMAT)


_DINOV3_FORMAT = (
    "Expected an official DINOv3 hub checkpoint (dinov3_vit{s16,s16plus,b16,l16,h16plus}_pretrain_"
    "*.pth or .safetensors): keys cls_token, storage_tokens, mask_token, patch_embed.proj.*, "
    "rope_embed.periods, blocks.<i>.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.*,ls2.gamma}.*, "
    "norm.*, for the architecture set in MODEL.DINOV2 (ARCH, PATCH_SIZE 16)."
)


def _shape(table: Dict[str, tuple], arch: str, family: str, embed_dim: int, depth: int,
           num_heads: int) -> Tuple[int, int, int]:
    """(embed_dim, depth, num_heads) of ``arch``; non-zero arguments override it (tiny models)."""
    if arch not in table and not (embed_dim and depth and num_heads):
        raise ValueError(
            f"Unknown {family} arch {arch!r}; choose one of {sorted(table)} or set "
            "MODEL.DINOV2.EMBED_DIM/DEPTH/NUM_HEADS."
        )
    preset = table.get(arch, (0, 0, 0))
    return embed_dim or preset[0], depth or preset[1], num_heads or preset[2]


def build_timm_dinov2(arch: str = "vit_large", *, embed_dim: int = 0, depth: int = 0,
                      num_heads: int = 0, **kwargs) -> TimmViT:
    """DINOv2 on timm modules (``DINOV2_ARCHS`` names); kwargs as :class:`TimmViT`."""
    dim, dep, heads = _shape(DINOV2_ARCHS, arch, "DINOv2", embed_dim, depth, num_heads)
    return TimmViT(embed_dim=dim, depth=dep, num_heads=heads, checkpoint_format="dinov2", **kwargs)


def build_timm_dinov3(arch: str = "vit_large", *, embed_dim: int = 0, depth: int = 0,
                      num_heads: int = 0, **kwargs) -> TimmDINOv3:
    """DINOv3 (``DINOV3_ARCHS`` names); kwargs as :class:`TimmDINOv3`."""
    dim, dep, heads = _shape(DINOV3_ARCHS, arch, "DINOv3", embed_dim, depth, num_heads)
    kwargs.setdefault("ffn_layer", DINOV3_ARCHS.get(arch, (0, 0, 0, "mlp"))[3])
    return TimmDINOv3(embed_dim=dim, depth=dep, num_heads=heads, **kwargs)


def build_timm_clip(arch: str = "vit_large", *, embed_dim: int = 0, depth: int = 0,
                    num_heads: int = 0, **kwargs) -> TimmViT:
    """OpenAI CLIP image tower (``CLIP_ARCHS`` names); kwargs as :class:`TimmViT`."""
    dim, dep, heads = _shape(CLIP_ARCHS, arch, "CLIP", embed_dim, depth, num_heads)
    kwargs.update(init_values=None, ffn_layer="mlp")
    return TimmViT(embed_dim=dim, depth=dep, num_heads=heads, checkpoint_format="openai_clip",
                   **kwargs)
