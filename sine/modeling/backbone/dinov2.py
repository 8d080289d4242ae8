"""DINOv2 vision transformer (plain, no register tokens), as used by SINE (spec §1).

Parameter names follow the official DINOv2 checkpoints (``dinov2_vit{s,b,l,g}14_pretrain.pth``,
``block_chunks=0`` layout), so they load without renaming. Architecture after
facebookresearch/dinov2 (``dinov2/models/vision_transformer.py``, ``dinov2/layers``), written anew.
"""
import logging
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# name -> (embed_dim, depth, num_heads)
DINOV2_ARCHS: Dict[str, Tuple[int, int, int]] = {
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_giant2": (1536, 40, 24),
}


class PosTableCache:
    """Positional tables per grid size, valid while the source parameter is unchanged.

    The key holds the parameter's version counter (bumped by optimizer steps and
    ``load_state_dict``'s in-place copy), storage, device and dtype; nothing is cached while the
    parameter is being trained (the table must stay in the autograd graph).
    """

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries  # a handful of grid sizes is all a run ever uses
        self.entries: Dict[tuple, Tuple[tuple, torch.Tensor]] = {}

    def get(self, param: torch.Tensor, key: tuple, compute) -> torch.Tensor:
        if (torch.is_grad_enabled() and param.requires_grad) or torch.compiler.is_compiling():
            return compute()  # traced (export): no storage to key on
        state = (param._version, param.data_ptr(), param.device, param.dtype)
        hit = self.entries.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        value = compute().detach()
        self.entries[key] = (state, value)
        return value


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p * W/p, C), row-major."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (keys ``qkv``, ``proj``)."""

    # True: fused SDPA (memory linear in N: 4097 tokens at 896 px). False: the official
    # softmax((q * scale) @ k^T) @ v, which materialises (B, heads, N, N). Equal up to rounding.
    fast_inference: bool = True

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.fast_inference:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """SwiGLU FFN of the official ViT-g weights (``ffn_layer="swiglufused"``; ``w12``, ``w3``)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        # DINOv2 shrinks the hidden size by 2/3 and rounds up to a multiple of 8.
        hidden_dim = (int(hidden_dim * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden_dim)
        self.w3 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    """Per-channel residual scaling (key ``gamma``)."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim, num_heads, mlp_ratio, init_values, ffn_layer):
        super().__init__()
        ffn_cls = {"mlp": Mlp, "swiglufused": SwiGLUFFN, "swiglu": SwiGLUFFN}[ffn_layer]
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ffn_cls(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT returning the patch features of the last block.

    Two recipes differ in what they read (options, one ViT):

    * SINE (default): ``x_prenorm``, the last block's tokens before the final norm (SINE spec
      §1.3); ``norm`` then exists only so that official checkpoints load strictly.
    * SegIC (``output_norm=True``): ``x_norm_patchtokens`` of the torch-hub model, the tokens after
      the final LayerNorm (SegIC spec §1.2).

    ``mask_token`` is never used (no masked tokens at inference); it is kept for strict loading.
    """

    # True caches the interpolated pos-embed per grid size (see cached_pos_encoding).
    fast_inference: bool = True

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        patch_size: int = 14,
        img_size: int = 518,
        init_values: float = 1e-5,
        ffn_layer: str = "mlp",
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        output_norm: bool = False,
    ):
        """
        Args:
            interpolate_offset: offset of the bicubic pos-embed resampling (official 0.1).
            interpolate_antialias: antialias of that resampling (off in both official recipes).
            output_norm: return the tokens after the final LayerNorm (SegIC) instead of before it
                (SINE).
        """
        super().__init__()
        if ffn_layer not in ("mlp", "swiglu", "swiglufused"):
            raise ValueError(f"Unknown DINOv2 ffn_layer {ffn_layer!r}; use 'mlp' or 'swiglufused'.")
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        self.output_norm = output_norm
        self.pos_grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid**2 + 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values, ffn_layer) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self._pos_cache = PosTableCache()  # (h, w) -> interpolated pos-embed
        self._register_load_state_dict_pre_hook(self._clear_pos_cache)

    def interpolate_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """Positional embedding (1, 1 + h*w, C) for an h x w patch grid (spec §1.2).

        Bicubic resampling of the stored g0 x g0 grid with ``scale_factor=((h + 0.1) / g0,
        (w + 0.1) / g0)``: PyTorch maps coordinates with the given factor, so this is NOT the
        same as ``size=(h, w)``; the official numbers depend on it.
        """
        g0 = self.pos_grid
        if h == g0 and w == g0:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
        offset = self.interpolate_offset
        patch_pos = F.interpolate(
            patch_pos,
            scale_factor=((h + offset) / g0, (w + offset) / g0),
            mode="bicubic",
            antialias=self.interpolate_antialias,
        )
        if patch_pos.shape[-2:] != (h, w):
            raise RuntimeError(
                f"pos-embed interpolation gave {tuple(patch_pos.shape[-2:])}, expected {(h, w)}"
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls_pos, patch_pos], dim=1).to(self.pos_embed.dtype)

    def _clear_pos_cache(self, *args) -> None:
        self._pos_cache.entries.clear()

    def cached_pos_encoding(self, h: int, w: int) -> torch.Tensor:
        """:meth:`interpolate_pos_encoding`, cached per grid size on the fast path (an entry is
        reused only while ``pos_embed`` is unchanged: see :class:`PosTableCache`)."""
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
            ``output_norm``), cls token dropped.
        """
        B, _, H, W = x.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"DINOv2 input size {H}x{W} is not a multiple of the patch size {p}.")
        h, w = H // p, W // p
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)
        tokens = tokens + self.cached_pos_encoding(h, w).to(tokens.dtype)
        for blk in self.blocks:
            tokens = blk(tokens)
        if self.output_norm:
            tokens = self.norm(tokens)
        return tokens[:, 1:].transpose(1, 2).reshape(B, self.embed_dim, h, w)


def build_dinov2_vit(
    arch: str = "vit_large",
    *,
    embed_dim: int = 0,
    depth: int = 0,
    num_heads: int = 0,
    **kwargs,
) -> DinoVisionTransformer:
    """Build a DINOv2 ViT by name; non-zero ``embed_dim/depth/num_heads`` override the preset."""
    if arch not in DINOV2_ARCHS and not (embed_dim and depth and num_heads):
        raise ValueError(
            f"Unknown DINOv2 arch {arch!r}; choose one of {sorted(DINOV2_ARCHS)} or set "
            "MODEL.DINOV2.EMBED_DIM/DEPTH/NUM_HEADS."
        )
    preset = DINOV2_ARCHS.get(arch, (0, 0, 0))
    return DinoVisionTransformer(
        embed_dim=embed_dim or preset[0],
        depth=depth or preset[1],
        num_heads=num_heads or preset[2],
        **kwargs,
    )


_EXPECTED_FORMAT = (
    "Expected an official DINOv2 checkpoint (e.g. dinov2_vitl14_pretrain.pth): a flat state dict "
    "with keys cls_token, pos_embed, mask_token, patch_embed.proj.*, blocks.<i>.*, norm.* "
    "(optionally nested under 'teacher' and/or prefixed by 'module.'/'backbone.'), for the "
    "architecture set in MODEL.DINOV2."
)


def read_dinov2_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """Read a DINOv2 checkpoint the way the official loader does (spec §1.6)."""
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} does not hold a state dict. {_EXPECTED_FORMAT}")
    if "teacher" in state_dict:
        state_dict = state_dict["teacher"]
    return {k.replace("module.", "").replace("backbone.", ""): v for k, v in state_dict.items()}


def load_state_dict_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], path: str,
                           expected_format: str) -> None:
    """``load_state_dict(strict=True)`` with one error listing every misfit key of ``path``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    bad_shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or bad_shapes:
        raise ValueError(
            f"Checkpoint {path} does not fit the {type(model).__name__} built from the config.\n"
            f"  missing keys ({len(missing)}): {_abbrev(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {_abbrev(unexpected)}\n"
            f"  shape mismatches ({len(bad_shapes)}): {_abbrev(bad_shapes)}\n"
            f"{expected_format}"
        )
    model.load_state_dict(state_dict, strict=True)


def load_dinov2_checkpoint(model: DinoVisionTransformer, path: str) -> None:
    """Load official DINOv2 weights into ``model``; raise ValueError unless every key fits.

    Unlike the official loader (``strict=False``, which silently loads nothing on a layout
    mismatch), missing, unexpected and wrongly shaped keys are all errors.
    """
    state_dict = read_dinov2_state_dict(path)
    load_state_dict_strict(model, state_dict, path, _EXPECTED_FORMAT)
    logger.info("Loaded DINOv2 weights from %s (%d tensors).", path, len(state_dict))


def _abbrev(items, limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")

