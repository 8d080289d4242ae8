"""ONNX export of SINE's two stages and their onnxruntime runners.

* Encoder: (B, 3, S, S) preprocessed images -> (B, C, S/p, S/p) neck features. The batch is
  dynamic; the square size S is fixed per export (SINE pads every image to ``PAD_SIZE``): the
  ViT's pos-embed is resampled for that grid at export time and stored as a constant.
* Decoder with cached reference tokens: target neck features (1, C, h, w), ID tokens (1, nm, C)
  and semantic prototypes (1, nc, C) -> the final-level predictions (``pred_id_logits``
  (1, nm, 2), ``pred_ins_logits`` (1, nq, nc + 1), ``pred_id_masks`` (1, nm, 4h, 4w),
  ``pred_ins_masks`` (1, nq, 4h, 4w)). nm and nc are fixed per export: the decoder builds its
  attention masks and query splits from them as Python integers, which the exporter specialises.
  Auxiliary (earlier-level) predictions are not exported (inference does not read them).

Exported with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, needs ``onnxscript``);
run with onnxruntime on the CPU. Reference tokens come from the PyTorch model (pooling runs once
per reference set and is cheap); post-processing stays in PyTorch.
"""
import json
import os
from typing import Dict, FrozenSet, Optional, Tuple

import torch
from torch import nn

from ..modeling.in_context import ALL_OUTPUTS, InContextSegmenter, check_outputs

__all__ = ["DECODER_OUTPUTS", "OnnxDecoder", "OnnxEncoder", "OnnxSegmenter", "export_decoder",
           "export_encoder", "write_manifest"]

DECODER_OUTPUTS = ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks")


class _NeckFeatures(nn.Module):
    """The backbone as a single-output module: images -> neck features."""

    def __init__(self, image_encoder: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(images)["neck"]


class _DecoderFromTokens(nn.Module):
    """The M-Former from pooled reference tokens to the final predictions (tuple)."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, tar_feat, id_tokens, sem_tokens) -> Tuple[torch.Tensor, ...]:
        # Labels only pass through to the result dict; they do not enter the computation.
        id_labels = torch.zeros(id_tokens.shape[1], dtype=torch.long)
        sem_labels = torch.zeros(sem_tokens.shape[1], dtype=torch.long)
        out = self.decoder.forward_tokens(id_tokens, sem_tokens, id_labels, sem_labels, tar_feat,
                                          lazy_aux=True)
        return tuple(out[k] for k in DECODER_OUTPUTS)


def _export(module: nn.Module, args: tuple, path: str, input_names, output_names,
            dynamic_shapes=None) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"  # nothing half written under the final name on interruption
    with torch.no_grad():
        torch.onnx.export(module.eval(), args, tmp, dynamo=True, input_names=list(input_names),
                          output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                          external_data=False, verbose=False)
    os.replace(tmp, path)


def export_encoder(model: nn.Module, path: str, size: Optional[int] = None) -> Dict:
    """Write the encoder of a SINE ``model`` to ``path``; returns its description.

    Args:
        size: square input size S (default: ``model.pad_size``), a multiple of the patch size.
    """
    size = size or model.pad_size
    div = model.size_divisibility
    if size % div:
        raise ValueError(f"export size {size} is not a multiple of the patch size {div}.")
    images = torch.zeros(2, 3, size, size, device=model.device)
    batch = torch.export.Dim("batch", min=1, max=1024)
    _export(_NeckFeatures(model.image_encoder), (images,), path, ["images"], ["neck"],
            {"images": {0: batch}})
    return {"size": size, "grid": size // div}


def export_decoder(model: nn.Module, path: str, num_id_tokens: int, num_classes: int,
                   size: Optional[int] = None) -> Dict:
    """Write the decoder of a SINE ``model`` for nm ID tokens and nc classes to ``path``."""
    if num_id_tokens < 1 or num_classes < 1:
        raise ValueError("export_decoder needs num_id_tokens >= 1 and num_classes >= 1.")
    size = size or model.pad_size
    grid = size // model.size_divisibility
    chans = model.image_encoder.feat_chans  # neck width = decoder input width
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, chans, grid, grid, generator=g),
            torch.randn(1, num_id_tokens, chans, generator=g),
            torch.randn(1, num_classes, chans, generator=g))
    args = tuple(a.to(model.device) for a in args)
    _export(_DecoderFromTokens(model.transformer_decoder), args, path,
            ["tar_feat", "id_tokens", "sem_tokens"], DECODER_OUTPUTS)
    return {"size": size, "grid": grid, "num_id_tokens": num_id_tokens,
            "num_classes": num_classes, "channels": chans}


def _session(path: str, threads: Optional[int]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Post-processing runs in PyTorch right after each call: idle onnxruntime workers must sleep,
    # not spin, or they take the cores from it (and from PyTorch models in the same process).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """onnxruntime encoder: (B, 3, S, S) float tensor -> {"neck": (B, C, S/p, S/p)}."""

    def __init__(self, path: str, threads: Optional[int] = None):
        self.session = _session(path, threads)
        self.size = self.session.get_inputs()[0].shape[-1]

    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        if images.shape[-2:] != (self.size, self.size):
            raise ValueError(
                f"this ONNX encoder takes {self.size}x{self.size} images, got "
                f"{tuple(images.shape[-2:])}; export one for that size "
                "(tools/export_onnx.py --size)."
            )
        (neck,) = self.session.run(None, {"images": images.detach().float().cpu().numpy()})
        return {"neck": torch.from_numpy(neck).to(images.device)}


class OnnxDecoder:
    """onnxruntime decoder: (tar_feat, id_tokens, sem_tokens) -> the four final predictions."""

    def __init__(self, path: str, threads: Optional[int] = None):
        self.session = _session(path, threads)
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        self.num_id_tokens = shapes["id_tokens"][1]
        self.num_classes = shapes["sem_tokens"][1]

    def __call__(self, tar_feat, id_tokens, sem_tokens) -> Dict[str, torch.Tensor]:
        if (id_tokens.shape[1], sem_tokens.shape[1]) != (self.num_id_tokens, self.num_classes):
            raise ValueError(
                f"this ONNX decoder was exported for {self.num_id_tokens} reference masks and "
                f"{self.num_classes} classes, got {id_tokens.shape[1]} and {sem_tokens.shape[1]}; "
                "export one for them (tools/export_onnx.py --num-id-tokens/--num-classes)."
            )
        feeds = {"tar_feat": tar_feat, "id_tokens": id_tokens, "sem_tokens": sem_tokens}
        outs = self.session.run(None, {k: v.detach().float().cpu().numpy()
                                       for k, v in feeds.items()})
        return {k: torch.from_numpy(v).to(tar_feat.device) for k, v in zip(DECODER_OUTPUTS, outs)}


def write_manifest(directory: str, entries: Dict) -> str:
    """``export.json`` next to the ONNX files: what each was exported for."""
    path = os.path.join(directory, "export.json")
    with open(path + ".part", "w") as f:
        json.dump(entries, f, indent=2)
    os.replace(path + ".part", path)
    return path


class OnnxSegmenter(InContextSegmenter):
    """A SINE model whose encoder and decoder run in onnxruntime, behind the same surface.

    ``preprocess_image``, ``reference_tokens`` (pooling, once per reference set) and the
    post-processing stay in PyTorch (the wrapped ``model``); ``encode`` and the decoding of
    ``segment`` run the ONNX files of ``directory``: ``encoder.onnx`` and one
    ``decoder_nm{N}_nc{C}.onnx`` per number of reference masks and classes. A missing file is
    exported from ``model`` on first use (the decoder when a new reference set needs it).
    ``segment`` always decodes every query (no ID-only decode) and reads no auxiliary outputs.
    """

    @staticmethod
    def unsupported_reason(model: InContextSegmenter) -> Optional[str]:
        """Why ``model`` cannot run in onnxruntime (None when it can)."""
        if not (hasattr(model, "transformer_decoder") and hasattr(model, "postprocess")):
            return f"the onnx backend supports SINE models, not {type(model).__name__}"
        if model.device.type != "cpu":
            return "the onnx backend runs on the CPU; build the model with MODEL.DEVICE cpu"
        return None

    def __init__(self, model: InContextSegmenter, directory: str, threads: Optional[int] = None):
        super().__init__()
        reason = self.unsupported_reason(model)
        if reason:
            raise ValueError(reason)
        self.model = model.eval()
        self.directory = directory
        self.threads = threads
        self.pad_size = model.pad_size
        self.size_divisibility = model.size_divisibility
        os.makedirs(directory, exist_ok=True)
        self._decoders: Dict[Tuple[int, int], OnnxDecoder] = {}
        path = os.path.join(directory, "encoder.onnx")
        if not os.path.isfile(path):
            export_encoder(model, path)
        self.encoder = OnnxEncoder(path, threads)
        if self.encoder.size != self.pad_size:
            raise ValueError(f"{path} was exported for {self.encoder.size} px images but the "
                             f"model pads to {self.pad_size}; remove it to re-export")

    @property
    def device(self) -> torch.device:
        return self.model.device

    def preprocess_image(self, image: torch.Tensor, size: int) -> torch.Tensor:
        return self.model.preprocess_image(image, size)

    def encode(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.encoder(images)

    def reference_tokens(self, features, masks, labels, ids=None, *, pooling=None, names=None):
        return self.model.reference_tokens(features, masks, labels, ids, pooling=pooling,
                                           names=names)

    def decoder(self, num_id_tokens: int, num_classes: int) -> OnnxDecoder:
        """The decoder session for nm ID tokens and nc classes (exported on first use)."""
        key = (num_id_tokens, num_classes)
        if key not in self._decoders:
            path = os.path.join(self.directory, f"decoder_nm{key[0]}_nc{key[1]}.onnx")
            if not os.path.isfile(path):
                export_decoder(self.model, path, *key)
            self._decoders[key] = OnnxDecoder(path, self.threads)
        return self._decoders[key]

    def segment(self, target_features, tokens, geometry, outputs=ALL_OUTPUTS) -> Dict:
        outputs = check_outputs(outputs, self.supported_outputs())
        raw = self.decoder(tokens.id_tokens.shape[1], tokens.sem_tokens.shape[1])(
            target_features["neck"], tokens.id_tokens, tokens.sem_tokens)
        raw.update(ref_id_labels=tokens.labels[None], ref_sem_labels=tokens.sem_labels[None])
        return self.model.postprocess(raw, tokens, geometry, outputs)

    def supported_outputs(self) -> FrozenSet[str]:
        return self.model.supported_outputs()

    def default_outputs(self) -> FrozenSet[str]:
        return self.model.default_outputs()
