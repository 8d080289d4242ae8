"""A tiny random CLIP text tower on disk, so tests can run SegIC with its text prompt."""
import os

TINY_CLIP_HIDDEN = 32


def write_tiny_clip_text(directory: str) -> str:
    """Save a 2-layer, width-32 ``CLIPTextModel`` (random weights) to ``directory``."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=TINY_CLIP_HIDDEN, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=2, bos_token_id=0,
                            eos_token_id=2, pad_token_id=1)
    CLIPTextModel(config).eval().save_pretrained(directory)
    return directory


def text_opts(directory: str):
    """Config overrides turning the text prompt on with the tower in ``directory``."""
    return ["MODEL.SEGIC.USE_TEXT", "True", "MODEL.SEGIC.TEXT_ENCODER.WEIGHTS",
            os.fspath(directory), "MODEL.SEGIC.TEXT_ENCODER.HIDDEN_SIZE", str(TINY_CLIP_HIDDEN)]
