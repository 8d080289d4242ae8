"""SegIC's meta instructions: the frozen CLIP text tower and its tokenizer, offline (spec §1.5).

The text tower is ``transformers``' ``CLIPTextModel`` (SegIC reads ``pooler_output``, the final
state of the first end-of-text token, before CLIP's text projection) loaded from a local
directory. The tokenizer is the real CLIP BPE tokenizer, built without a network either from a
local Hugging Face tokenizer directory or from the CLIP BPE merges file that ships inside the
``open-clip-torch`` wheel (``open_clip/bpe_simple_vocab_16e6.txt.gz``, OpenAI CLIP's file).
"""
import gzip
import importlib.util
import logging
import os
from typing import List, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["CLIP_BPE_FILE", "SegICTextEncoder", "build_clip_tokenizer", "find_clip_bpe_file",
           "load_clip_text_model"]

CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_BPE_HELP = (
    f"The CLIP tokenizer needs the CLIP BPE merges file {CLIP_BPE_FILE}: install the SegIC extra "
    "(pip install -e .[segic], which brings open-clip-torch and that file), or set "
    "MODEL.SEGIC.TEXT_ENCODER.TOKENIZER to that file or to a local Hugging Face CLIP tokenizer "
    "directory (e.g. a download of openai/clip-vit-large-patch14)."
)
_WEIGHTS_HELP = (
    "MODEL.SEGIC.TEXT_ENCODER.WEIGHTS must be a local Hugging Face directory of the CLIP ViT-L/14 "
    "text tower (config.json + model.safetensors or pytorch_model.bin), e.g. "
    "`huggingface-cli download openai/clip-vit-large-patch14 --local-dir clip-vit-large-patch14`; "
    "or set MODEL.SEGIC.USE_TEXT False to run without text."
)


def find_clip_bpe_file() -> str:
    """Path of the CLIP BPE merges file inside the installed ``open_clip`` package (not
    imported: only its location is read)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, CLIP_BPE_FILE)
            if os.path.isfile(path):
                return path
    raise FileNotFoundError(f"open-clip-torch is not installed. {_BPE_HELP}")


def _bytes_to_unicode() -> List[str]:
    """CLIP/GPT-2's reversible byte -> printable character table (256 entries, in id order)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _tokenizer_from_bpe_file(path: str):
    """CLIP tokenizer from the merges file: the vocabulary is the 256 byte symbols, the same
    with ``</w>``, one entry per merge, then ``<|startoftext|>``/``<|endoftext|>`` (49408 ids,
    OpenAI CLIP's construction)."""
    from transformers import CLIPTokenizer

    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    symbols = _bytes_to_unicode()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, merges=merges)


def build_clip_tokenizer(source: str = ""):
    """The CLIP tokenizer, offline.

    Args:
        source: "" = the BPE file of the installed open-clip-torch; a ``.txt.gz`` BPE file; or a
            local Hugging Face tokenizer directory.
    """
    if source and os.path.isdir(source):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    path = source or find_clip_bpe_file()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CLIP tokenizer file {path} does not exist. {_BPE_HELP}")
    return _tokenizer_from_bpe_file(path)


def load_clip_text_model(directory: str):
    """``CLIPTextModel`` from a local directory; a clear error names what is missing."""
    from transformers import CLIPTextModel

    if not directory:
        raise FileNotFoundError(f"No CLIP text weights given. {_WEIGHTS_HELP}")
    config = os.path.join(directory, "config.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{config} does not exist. {_WEIGHTS_HELP}")
    weights = [n for n in ("model.safetensors", "pytorch_model.bin") if
               os.path.isfile(os.path.join(directory, n))]
    if not weights:
        raise FileNotFoundError(
            f"{directory} has no model.safetensors or pytorch_model.bin. {_WEIGHTS_HELP}")
    return CLIPTextModel.from_pretrained(directory, local_files_only=True)


class SegICTextEncoder(nn.Module):
    """Frozen CLIP text tower: prompts -> (k, T_d) ``pooler_output``.

    Always in eval mode and without gradients (SegIC never trains it).
    """

    def __init__(self, text_model: nn.Module, tokenizer, max_length: int = 77):
        super().__init__()
        self.text_model = text_model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_model.requires_grad_(False)
        self.text_model.eval()

    @property
    def hidden_size(self) -> int:
        return self.text_model.config.hidden_size

    def train(self, mode: bool = True):
        return super().train(False)

    def tokenize(self, prompts: Sequence[str]):
        """(k, 77) input ids and attention mask, padded with ``<|endoftext|>`` (official)."""
        out = self.tokenizer(list(prompts), padding="max_length", max_length=self.max_length,
                             truncation=True, return_tensors="pt")
        return out["input_ids"], out["attention_mask"]

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """k prompt strings -> (k, T_d) pooled CLIP text embeddings."""
        device = next(self.text_model.parameters()).device
        ids, mask = self.tokenize(prompts)
        return self.text_model(input_ids=ids.to(device),
                               attention_mask=mask.to(device)).pooler_output
