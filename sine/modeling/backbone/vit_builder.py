"""The frozen ViT of :class:`~.dinov2_encoder.DINOv2Encoder`, chosen by ``MODEL.DINOV2.VIT``.

``dinov2`` is the hand-written DINOv2 (:mod:`.dinov2`); the others are built on timm's modules
(:mod:`.timm_vit`). All read the shape keys of ``MODEL.DINOV2`` (ARCH, or EMBED_DIM/DEPTH/
NUM_HEADS for tiny models; PATCH_SIZE; IMG_SIZE) and load ``MODEL.DINOV2.WEIGHTS`` in their
family's official checkpoint layout.
"""
from typing import Callable, Dict, List

from torch import nn

from .dinov2 import build_dinov2_vit, load_dinov2_checkpoint
from .timm_vit import build_timm_clip, build_timm_dinov2, build_timm_dinov3

__all__ = ["VIT_BUILDERS", "build_vit", "load_vit_checkpoint", "register_vit",
           "unused_vit_parameters"]

# MODEL.DINOV2.VIT name -> builder(cfg) -> ViT module.
VIT_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}


def register_vit(name: str):
    """Decorator registering ``builder(cfg)`` under ``MODEL.DINOV2.VIT`` = ``name``."""
    def wrap(builder):
        if name in VIT_BUILDERS:
            raise KeyError(f"ViT {name!r} is already registered")
        VIT_BUILDERS[name] = builder
        return builder
    return wrap


def _shape_kwargs(d) -> dict:
    return {"embed_dim": d.EMBED_DIM, "depth": d.DEPTH, "num_heads": d.NUM_HEADS,
            "mlp_ratio": d.MLP_RATIO, "patch_size": d.PATCH_SIZE, "img_size": d.IMG_SIZE}


def _registers(d, default: int) -> int:
    return default if d.NUM_REGISTER_TOKENS < 0 else d.NUM_REGISTER_TOKENS


@register_vit("dinov2")
def _hand_written_dinov2(cfg) -> nn.Module:
    d = cfg.MODEL.DINOV2
    if _registers(d, 0):
        raise ValueError(
            "The hand-written DINOv2 (MODEL.DINOV2.VIT 'dinov2') has no register tokens; set "
            "MODEL.DINOV2.VIT 'timm_dinov2' for the *_reg4 models."
        )
    return build_dinov2_vit(d.ARCH, init_values=d.INIT_VALUES, ffn_layer=d.FFN_LAYER,
                            interpolate_offset=d.INTERPOLATE_OFFSET,
                            interpolate_antialias=d.INTERPOLATE_ANTIALIAS,
                            output_norm=d.OUTPUT_NORM, **_shape_kwargs(d))


@register_vit("timm_dinov2")
def _timm_dinov2(cfg) -> nn.Module:
    d = cfg.MODEL.DINOV2
    return build_timm_dinov2(
        d.ARCH, init_values=d.INIT_VALUES, ffn_layer=d.FFN_LAYER,
        num_register_tokens=_registers(d, 0), interpolate_offset=d.INTERPOLATE_OFFSET,
        interpolate_antialias=d.INTERPOLATE_ANTIALIAS, output_norm=d.OUTPUT_NORM,
        **_shape_kwargs(d),
    )


@register_vit("timm_dinov3")
def _timm_dinov3(cfg) -> nn.Module:
    # FFN type comes from the arch (S+/H+ use SwiGLU); RoPE needs no pos-embed interpolation.
    d = cfg.MODEL.DINOV2
    return build_timm_dinov3(d.ARCH, init_values=d.INIT_VALUES,
                             num_register_tokens=_registers(d, 4), output_norm=d.OUTPUT_NORM,
                             **_shape_kwargs(d))


@register_vit("timm_clip")
def _timm_clip(cfg) -> nn.Module:
    d = cfg.MODEL.DINOV2
    if _registers(d, 0):
        raise ValueError("CLIP has no register tokens; set MODEL.DINOV2.NUM_REGISTER_TOKENS -1.")
    return build_timm_clip(d.ARCH, interpolate_offset=d.INTERPOLATE_OFFSET,
                           interpolate_antialias=d.INTERPOLATE_ANTIALIAS,
                           output_norm=d.OUTPUT_NORM, **_shape_kwargs(d))


def build_vit(cfg) -> nn.Module:
    """The ViT named by ``cfg.MODEL.DINOV2.VIT`` (random init; see :func:`load_vit_checkpoint`)."""
    name = cfg.MODEL.DINOV2.VIT
    if name not in VIT_BUILDERS:
        raise ValueError(
            f"Unknown MODEL.DINOV2.VIT {name!r}; choose one of {sorted(VIT_BUILDERS)}."
        )
    return VIT_BUILDERS[name](cfg)


def load_vit_checkpoint(vit: nn.Module, path: str) -> None:
    """Load ``vit``'s official checkpoint from ``path``; ValueError unless every key fits."""
    if hasattr(vit, "load_official_checkpoint"):
        vit.load_official_checkpoint(path)
    else:
        load_dinov2_checkpoint(vit, path)


def unused_vit_parameters(vit: nn.Module) -> List[nn.Parameter]:
    """Parameters the patch features never use; they stay frozen when the ViT is trained.

    A trainable parameter without a gradient would break DDP's reduction.
    """
    if hasattr(vit, "unused_parameters"):
        return list(vit.unused_parameters())
    # Hand-written DINOv2: no token is masked; the final norm is unused unless read after it.
    return [vit.mask_token] + ([] if vit.output_norm else list(vit.norm.parameters()))
