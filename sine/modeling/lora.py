"""LoRA adapters on a frozen ViT through ``peft`` (no hand-written low-rank layers).

``add_lora`` wraps the target ``nn.Linear`` layers (by default DINOv2's fused attention ``qkv``)
with peft's LoRA layers, in place, so the module keeps its class and forward. The base weights
move to ``<name>.base_layer.weight``; only ``lora_A`` / ``lora_B`` are trainable.
``merge_lora`` / ``unmerge_lora`` fold the low-rank update into the base weights for inference
and take it out again for training.
"""
from typing import Dict, Sequence

import torch
from torch import nn

__all__ = ["add_lora", "has_lora", "lora_state_dict", "load_lora_state_dict", "merge_lora",
           "unmerge_lora"]


def _require_peft():
    try:
        import peft  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "LoRA transfer needs the 'peft' package: pip install -e '.[transfer]' (the README's "
            "test command installs it)"
        ) from e


def add_lora(module: nn.Module, rank: int, alpha: float, target_modules: Sequence[str],
             dropout: float = 0.0) -> nn.Module:
    """Inject LoRA layers into ``module`` (in place) and return it.

    Args:
        module: e.g. the DINOv2 ViT; its own parameters are left as they are (freeze them first).
        rank: LoRA rank r (paper: 32).
        alpha: LoRA scaling numerator (update = B A * alpha / r).
        target_modules: names (or name suffixes) of the ``nn.Linear`` layers to adapt, e.g.
            ``["qkv"]`` for DINOv2's attention, ``["qkv", "proj"]`` for all attention weights.
        dropout: dropout on the LoRA branch input.
    """
    _require_peft()
    from peft import LoraConfig, inject_adapter_in_model

    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)
             and any(n == t or n.endswith("." + t) for t in target_modules)]
    if not names:
        raise ValueError(f"no nn.Linear named {list(target_modules)} in {type(module).__name__}; "
                         "check MODEL.TRANSFER.LORA.TARGET_MODULES")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules),
                        lora_dropout=dropout, bias="none")
    return inject_adapter_in_model(config, module)


def _lora_layers(module: nn.Module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def has_lora(module: nn.Module) -> bool:
    try:
        return bool(_lora_layers(module))
    except ImportError:
        return False


def lora_state_dict(module: nn.Module) -> Dict[str, torch.Tensor]:
    """The LoRA weights of ``module`` only (peft's adapter state dict, names without adapter)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(module).items()}


def load_lora_state_dict(module: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load weights saved by :func:`lora_state_dict`; every LoRA weight must be present."""
    from peft import set_peft_model_state_dict

    expected = set(lora_state_dict(module))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"adapter does not fit the model: missing {sorted(missing)[:4]} ({len(missing)}), "
            f"unexpected {sorted(unexpected)[:4]} ({len(unexpected)}); was it trained with the "
            "same MODEL.TRANSFER.LORA settings and ViT?"
        )
    set_peft_model_state_dict(module, state)


def merge_lora(module: nn.Module) -> None:
    """Fold every LoRA update into its base weight (inference runs plain linear layers)."""
    for layer in _lora_layers(module):
        if not layer.merged:
            layer.merge()


def unmerge_lora(module: nn.Module) -> None:
    """Undo :func:`merge_lora` (training needs the separate low-rank branch)."""
    for layer in _lora_layers(module):
        if layer.merged:
            layer.unmerge()
