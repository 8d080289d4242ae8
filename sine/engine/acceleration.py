"""CPU speed options of in-context inference, as named policies, and their measured choice.

    fast = accelerate(model, "int8")                 # same InContextSegmenter surface
    choice = choose_acceleration(model)              # measured once per machine, then cached
    fast = accelerate(model, choice.name)

Options (:data:`ACCELERATIONS`; a new one is a :func:`register_acceleration` call):

* ``fp32``: the model as it is.
* ``bf16``: the ViT alone under ``torch.autocast("cpu", torch.bfloat16)``, its output cast back
  to float32 (neck, fusion, decoder and post-processing stay float32). Offered only where the CPU
  has native bf16 (``avx512_bf16`` or ``amx_bf16``); elsewhere bf16 is emulated and slow.
* ``int8``: dynamic int8 quantisation of the ``nn.Linear`` layers of a copy of the ViT (the
  rest shares the model's float32 weights; post-processing stays float32). Only the encoder:
  quantising the whole model was no faster and agreed less (random-weight ViT-S, 224 px, 200
  queries, 1 thread, two rounds: fp32 0.61 / 0.67 s, int8 encoder 0.42 / 0.44 s with ID mask
  IoU 1.000, int8 whole model 0.45 / 0.41 s with ID mask IoU 0.898; on the tiny test model the
  whole model was 2x slower than fp32).
* ``onnx``: encoder and decoder in onnxruntime (:class:`~sine.export.onnx.OnnxSegmenter`;
  needs the ``onnx`` extra).

Whether an option is faster depends on the machine (bf16 matrix products are >10x faster than
float32 on AMX CPUs and slower on AVX512-BF16 ones without AMX), so :func:`choose_acceleration`
times every available option on one sample pair, measures its agreement with float32 and keeps
the fastest that agrees; the decision is cached per machine (:func:`cache_path`).
"""
import copy
import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..modeling.in_context import ImageGeometry, InContextSegmenter

logger = logging.getLogger(__name__)

__all__ = [
    "ACCELERATIONS",
    "AccelerationChoice",
    "AccelerationOption",
    "AccelerationUnavailable",
    "CandidateMeasurement",
    "SamplePair",
    "accelerate",
    "agreement",
    "cache_path",
    "choose_acceleration",
    "cpu_flags",
    "register_acceleration",
    "run_pair",
    "synthetic_pair",
]

#: cpuinfo flags with native bf16 matrix products.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: cpuinfo flags that change which option is fastest (part of the cache key).
RELEVANT_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                      "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
#: Where each model keeps its ViT (SINE: DINOv2Encoder.encoder; SegIC: encoder).
VIT_PATHS = ("image_encoder.encoder", "encoder")
CACHE_VERSION = 1


class AccelerationUnavailable(ValueError):
    """An option cannot run on this machine or model (the message says why and the fix)."""


# ------------------------------------------------------------------------------- machine
def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:  # not Linux: no flags are reported
        pass
    return ""


def cpu_flags() -> FrozenSet[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    return frozenset(_cpuinfo_field("flags").split())


def cpu_model_name() -> str:
    import platform

    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


# ------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class AccelerationOption:
    """A named CPU speed option.

    Attributes:
        name: what users pass (``--acceleration NAME``).
        description: one line for tables and logs.
        unavailable: model -> why the option cannot run here (None when it can).
        apply: (model, onnx_dir) -> the model running with the option, behind the same
            :class:`InContextSegmenter` surface; the given model is left unchanged.
    """

    name: str
    description: str
    unavailable: Callable[[InContextSegmenter], Optional[str]]
    apply: Callable[[InContextSegmenter, Optional[str]], InContextSegmenter]


#: name -> option, in the order :func:`choose_acceleration` measures them.
ACCELERATIONS: Dict[str, AccelerationOption] = {}


def register_acceleration(option: AccelerationOption) -> AccelerationOption:
    if option.name in ACCELERATIONS or option.name == "auto":
        raise KeyError(f"acceleration {option.name!r} is already registered")
    ACCELERATIONS[option.name] = option
    return option


def _on_cpu(model: InContextSegmenter) -> Optional[str]:
    if model.device.type != "cpu":
        return (f"it is a CPU option and the model is on {model.device} (build it with "
                "MODEL.DEVICE cpu)")
    return None


def _vit_path(model: nn.Module) -> Optional[str]:
    for path in VIT_PATHS:
        try:
            model.get_submodule(path)
            return path
        except AttributeError:
            continue
    return None


def _no_vit(model: nn.Module) -> Optional[str]:
    if _vit_path(model) is None:
        return f"{type(model).__name__} has no ViT at any of {list(VIT_PATHS)}"
    return None


def _with_submodule(root: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """A shallow copy of ``root`` whose submodule at the dotted ``path`` is ``new``. Every
    other submodule, parameter and buffer is shared with ``root``, which is left unchanged (no
    second copy of the weights, and other users of ``root`` are unaffected)."""
    head, _, rest = path.partition(".")
    clone = copy.copy(root)
    clone._modules = dict(root._modules)  # the copy's own child table; the children are shared
    clone._modules[head] = new if not rest else _with_submodule(root._modules[head], rest, new)
    return clone


class _Delegating(nn.Module):
    """Wraps a module; attributes it does not have come from the wrapped one (``patch_size``,
    ``embed_dim``, ...), so callers of the ViT see no difference."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


class Bf16Autocast(_Delegating):
    """The wrapped module under CPU bf16 autocast; its (tensor) output back in float32."""

    def forward(self, *args, **kwargs) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.module(*args, **kwargs)
        return out.float()


def _fp32(model, onnx_dir):
    return model


def _bf16_unavailable(model) -> Optional[str]:
    if not cpu_flags() & set(BF16_CPU_FLAGS):
        return ("this CPU has no native bf16: neither the avx512_bf16 nor the amx_bf16 flag "
                "is in /proc/cpuinfo (bf16 would be emulated and slower than fp32)")
    return _on_cpu(model) or _no_vit(model)


def _bf16(model, onnx_dir):
    path = _vit_path(model)
    return _with_submodule(model, path, Bf16Autocast(model.get_submodule(path)))


def _int8_unavailable(model) -> Optional[str]:
    engines = {"x86", "fbgemm", "onednn", "qnnpack"}
    if not engines & set(torch.backends.quantized.supported_engines):
        return f"this torch build has no quantized CPU engine (one of {sorted(engines)})"
    return _on_cpu(model) or _no_vit(model)


def _int8(model, onnx_dir):
    path = _vit_path(model)
    vit = copy.deepcopy(model.get_submodule(path))
    with warnings.catch_warnings():  # torch.ao's deprecation notices; the API still works
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        quantized = torch.ao.quantization.quantize_dynamic(vit, {nn.Linear}, dtype=torch.qint8)
    return _with_submodule(model, path, quantized)


ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def _onnx_unavailable(model) -> Optional[str]:
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        return (f"the onnx extra is not installed (missing {', '.join(missing)}); install it "
                "with pip install -e .[onnx]")
    from ..export.onnx import OnnxSegmenter

    return OnnxSegmenter.unsupported_reason(model)


def _onnx(model, onnx_dir):
    from ..export.onnx import OnnxSegmenter

    if onnx_dir is None:
        onnx_dir = tempfile.mkdtemp(prefix="sine_onnx_")
        logger.info("exporting the ONNX files to %s (pass onnx_dir to keep them)", onnx_dir)
    return OnnxSegmenter(model, onnx_dir)


for _option in (
    AccelerationOption("fp32", "the model as it is (float32)", lambda model: None, _fp32),
    AccelerationOption("bf16", "ViT under CPU bf16 autocast, the rest float32",
                       _bf16_unavailable, _bf16),
    AccelerationOption("int8", "dynamic int8 quantisation of the ViT's linear layers",
                       _int8_unavailable, _int8),
    AccelerationOption("onnx", "encoder and decoder in onnxruntime", _onnx_unavailable, _onnx),
):
    register_acceleration(_option)


def _option(name: str) -> AccelerationOption:
    if name not in ACCELERATIONS:
        raise ValueError(f"unknown acceleration {name!r}; choose from {sorted(ACCELERATIONS)} "
                         "or 'auto'")
    return ACCELERATIONS[name]


def accelerate(model: InContextSegmenter, name: str,
               onnx_dir: Optional[str] = None) -> InContextSegmenter:
    """``model`` running with the option ``name``, behind the same inference surface.

    ``model`` itself is not changed: "bf16" and "int8" return a copy sharing every weight but
    the ViT's wrapper (bf16) or its quantised copy (int8); "onnx" wraps it (ONNX files in
    ``onnx_dir``, exported there on first use; default: a new temporary directory). The result
    is for inference: train and save ``model`` itself (the copies' state-dict keys differ).

    Raises:
        ValueError: unknown name.
        AccelerationUnavailable: the option cannot run on this machine or model (says why).
    """
    option = _option(name)
    reason = option.unavailable(model)
    if reason:
        raise AccelerationUnavailable(f"acceleration {name!r} is not available: {reason}")
    return option.apply(model, onnx_dir)


# ------------------------------------------------------------------------------- sample pair
@dataclass
class SamplePair:
    """One target with one reference, as the predictor feeds a model.

    Attributes:
        reference, target: uint8 (3, h, w) images, longer side <= the model's pad size.
        masks: (n, h, w) bool masks of the reference; labels: (n,) int64 class ids.
        output_size: (H, W) results are returned at (the target's original size).
    """

    reference: torch.Tensor
    target: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    output_size: Tuple[int, int]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in (self.reference, self.target, self.masks, self.labels):
            h.update(t.contiguous().cpu().numpy().tobytes())
        h.update(repr(tuple(self.output_size)).encode())
        return h.hexdigest()[:16]


def synthetic_pair(pad_size: int, seed: int = 0) -> SamplePair:
    """A deterministic pair of the built-in synthetic data: two scenes with objects of the same
    two categories, resized (longer side = ``pad_size``) as the predictor resizes images."""
    import numpy as np

    from ..data.synthetic import THING_CATEGORIES
    from ..data.synthetic.scenes import render_scene
    from .predictor import _resize_image, _resize_masks

    categories = [(c["id"], 1) for c in THING_CATEGORIES[:2]]
    ref = render_scene(np.random.default_rng(seed), categories)
    tar = render_scene(np.random.default_rng(seed + 1), categories)
    ids = sorted({c for c, _ in ref.things})
    reference = _resize_image(ref.image, pad_size)
    masks = _resize_masks(np.stack([m for _, m in ref.things]), tuple(reference.shape[-2:]))
    labels = torch.tensor([ids.index(c) for c, _ in ref.things], dtype=torch.int64)
    return SamplePair(reference, _resize_image(tar.image, pad_size), masks, labels,
                      tuple(tar.image.shape[:2]))


@torch.no_grad()
def run_pair(model: InContextSegmenter, pair: SamplePair) -> Dict:
    """One pair through the surface, as the predictor runs it: both images encoded in one batch,
    the reference tokens, then the target segmented with the model's default outputs."""
    size = model.pad_size
    images = torch.stack([model.preprocess_image(im, size) for im in (pair.target, pair.reference)])
    features = model.encode(images)
    ref_features = {k: v[1:] for k, v in features.items()}
    dev = model.device
    masks = torch.nn.functional.pad(pair.masks, (0, size - pair.masks.shape[-1],
                                                 0, size - pair.masks.shape[-2]))
    tokens = model.reference_tokens(ref_features, [masks.to(dev)], [pair.labels.to(dev)])
    geometry = ImageGeometry((size, size), tuple(pair.target.shape[-2:]), pair.output_size)
    return model.segment({k: v[:1] for k, v in features.items()}, tokens, geometry,
                         model.default_outputs())


# ------------------------------------------------------------------------------- agreement
def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0


def _matched_mask_iou(masks_a, groups_a, masks_b, groups_b) -> float:
    """Mean IoU of every mask with its best match of the same group (class or instance id) in
    the other set, the lower of the two directions (missing and extra masks both count)."""
    if len(masks_a) == 0 or len(masks_b) == 0:
        return 1.0 if len(masks_a) == len(masks_b) else 0.0
    a, b = masks_a.flatten(1).float(), masks_b.flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
    iou = torch.where(groups_a[:, None] == groups_b[None], iou, torch.zeros_like(iou))
    return min(iou.amax(1).mean().item(), iou.amax(0).mean().item())


def agreement(reference: Dict, result: Dict, sem_seg_thresh: float) -> Dict[str, float]:
    """How far ``result`` agrees with ``reference`` (both :meth:`~InContextSegmenter.segment`
    results of one target), per output kind, 1 = identical:

    * "sem_seg": IoU of the binarised semantic maps (> ``sem_seg_thresh``, the FSS prediction);
    * "sem_seg_argmax": fraction of pixels whose best-scoring class is the same (informative
      also where no score passes the threshold, e.g. random weights, whose FSS IoU is 1);
    * "instances": matched mask IoU (see :func:`_matched_mask_iou`) within each class;
    * "id": matched mask IoU within each reference instance id.
    """
    out = {}
    if "sem_seg" in reference:
        a, b = reference["sem_seg"], result["sem_seg"]
        out["sem_seg"] = _mask_iou(a > sem_seg_thresh, b > sem_seg_thresh)
        out["sem_seg_argmax"] = (a.argmax(0) == b.argmax(0)).float().mean().item()
    for key, group in (("instances", "pred_classes"), ("id", "pred_ids")):
        if key in reference:
            a, b = reference[key], result[key]
            out[key] = _matched_mask_iou(a.pred_masks, getattr(a, group),
                                         b.pred_masks, getattr(b, group))
    return out


# ------------------------------------------------------------------------------- choice
@dataclass
class CandidateMeasurement:
    """One candidate of :func:`choose_acceleration`.

    Attributes:
        latency_s: median seconds of one pair (None: not measured).
        agreement: the lowest of ``agreement_by_output`` (None: not measured).
        agreement_by_output: :func:`agreement` with fp32, per output kind.
        skipped: why it was not chosen (None for the chosen one).
    """

    name: str
    latency_s: Optional[float] = None
    agreement: Optional[float] = None
    agreement_by_output: Dict[str, float] = field(default_factory=dict)
    skipped: Optional[str] = None


@dataclass
class AccelerationChoice:
    """The option :func:`choose_acceleration` picked, with every candidate's measurement."""

    name: str
    candidates: List[CandidateMeasurement]
    min_agreement: float
    from_cache: bool = False

    def table(self) -> str:
        """A markdown table: candidate, median latency, agreement with fp32, verdict."""
        rows = ["| option | median s | agreement (min; per output) | verdict |",
                "|---|---|---|---|"]
        for c in self.candidates:
            lat = "-" if c.latency_s is None else f"{c.latency_s:.4f}"
            agr = "-" if c.agreement is None else f"{c.agreement:.4f} (" + ", ".join(
                f"{k} {v:.4f}" for k, v in sorted(c.agreement_by_output.items())) + ")"
            rows.append(f"| {c.name} | {lat} | {agr} | {c.skipped or 'chosen'} |")
        return "\n".join(rows)

    def to_dict(self) -> Dict:
        d = dataclasses.asdict(self)
        d.pop("from_cache")
        return d

    @classmethod
    def from_dict(cls, d: Dict) -> "AccelerationChoice":
        return cls(name=d["name"], min_agreement=float(d["min_agreement"]), from_cache=True,
                   candidates=[CandidateMeasurement(**c) for c in d["candidates"]])


def cache_path() -> str:
    """``$SINE_CACHE_DIR/acceleration.json``, else ``~/.cache/sine/acceleration.json``."""
    directory = os.environ.get("SINE_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "sine")
    return os.path.join(directory, "acceleration.json")


def _package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_fingerprint(model: InContextSegmenter) -> str:
    """The architecture, not the weights: class, module tree, parameter and buffer shapes and
    dtypes, pad size, fast-path flag and default outputs. Hashing the weights would take
    seconds for a ViT-L and hardly changes which option is fastest."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model}\n".encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
    h.update(repr((model.pad_size, getattr(model, "fast_inference", None),
                   sorted(model.default_outputs()))).encode())
    return h.hexdigest()[:16]


def _cache_key(model, candidates, min_agreement, sample_id, sem_seg_thresh) -> Dict:
    return {
        "cpu": cpu_model_name(),
        "cpu_flags": sorted(cpu_flags() & set(RELEVANT_CPU_FLAGS)),
        "torch": torch.__version__,
        "onnxruntime": _package_version("onnxruntime"),
        "threads": torch.get_num_threads(),
        "model": model_fingerprint(model),
        "device": str(model.device),
        "candidates": list(candidates),
        "min_agreement": min_agreement,
        "sem_seg_thresh": sem_seg_thresh,
        "sample": sample_id,
    }


def _key_id(key: Dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _read_cache(path: str) -> Dict:
    """The cache's entries; a missing file is empty, an unreadable one is ignored (warning)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
            raise ValueError(f"not a version-{CACHE_VERSION} acceleration cache")
        return data["entries"]
    except (OSError, ValueError, AttributeError) as e:
        warnings.warn(f"ignoring the acceleration cache {path} ({e}); measuring again and "
                      "rewriting it", RuntimeWarning, stacklevel=3)
        return {}


def _write_cache(path: str, entries: Dict) -> None:
    from ..utils.io import atomic_write_json  # tmp file + os.replace: never half written

    atomic_write_json(path, {"version": CACHE_VERSION, "entries": entries})


def _short(error: Exception) -> str:
    """The first line of an error, at most 200 characters (exporter errors run for pages)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()  # no colour codes
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def _median_seconds(runners: Dict[str, Callable[[], object]], repeats: int,
                    clock) -> Dict[str, float]:
    """Median seconds of every runner over ``repeats`` rounds; the runners take turns within a
    round (in the given order), so a machine whose load drifts does not favour one of them.
    ``clock`` is read twice per timed call (before, after)."""
    seconds = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = clock()
            run()
            seconds[name].append(clock() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def choose_acceleration(
    model: InContextSegmenter,
    candidates: Sequence[str] = ("fp32", "bf16", "int8", "onnx"),
    *,
    repeats: int = 3,
    min_agreement: float = 0.99,
    sample: Optional[SamplePair] = None,
    clock: Callable[[], float] = time.perf_counter,
    cache: Union[bool, str] = True,
    onnx_dir: Optional[str] = None,
    sem_seg_thresh: Optional[float] = None,
) -> AccelerationChoice:
    """Measure the available options on one pair and pick the fastest that agrees with fp32.

    Every available candidate runs the pair once untimed (warm-up, exports; its result gives
    the agreement: the lowest of :func:`agreement`'s values against fp32's), then ``repeats``
    timed rounds in which the candidates take turns in the order given (fp32 first, added if
    absent: it is the reference). The fastest candidate (median) with agreement >=
    ``min_agreement`` wins; fp32 always qualifies. A candidate that raises is skipped.

    Args:
        sample: the pair to measure on (default: :func:`synthetic_pair` at the pad size).
        clock: seconds counter (injectable for tests).
        cache: True: read / write :func:`cache_path`; a path: that file; False: always measure.
            The key is the CPU model and flags, torch and onnxruntime versions, the number of
            torch threads, :func:`model_fingerprint`, the candidates, ``min_agreement``, the
            threshold and the sample; the decision is measured once per key.
        onnx_dir: where the "onnx" candidate exports (default: a temporary directory, removed).
        sem_seg_thresh: FSS binarisation threshold of the semantic map (default: the config's
            MODEL.SINE.TEST.SEM_SEG_THRESH default).
    Returns:
        :class:`AccelerationChoice`; skipped candidates say why (unavailable, failed, too low
        agreement, slower).
    """
    candidates = ["fp32", *[c for c in candidates if c != "fp32"]]
    for name in candidates:
        _option(name)  # unknown names fail before anything is measured
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if sem_seg_thresh is None:
        from ..config import get_default_cfg

        sem_seg_thresh = get_default_cfg().MODEL.SINE.TEST.SEM_SEG_THRESH
    path = cache if isinstance(cache, str) else (cache_path() if cache else None)
    key = key_id = None
    entries: Dict = {}
    if path:
        sample_id = "synthetic" if sample is None else sample.fingerprint()
        key = _cache_key(model, candidates, min_agreement, sample_id, sem_seg_thresh)
        key_id = _key_id(key)
        entries = _read_cache(path)
        entry = entries.get(key_id)
        if entry is not None:
            try:
                return AccelerationChoice.from_dict(entry["choice"])
            except (KeyError, TypeError, ValueError) as e:
                warnings.warn(f"ignoring a malformed entry of the acceleration cache {path} "
                              f"({e!r}); measuring again", RuntimeWarning, stacklevel=2)

    measured = {name: CandidateMeasurement(name) for name in candidates}
    runnable = []
    for name in candidates:
        reason = ACCELERATIONS[name].unavailable(model)
        if reason:
            measured[name].skipped = f"unavailable: {reason}"
        else:
            runnable.append(name)
    if runnable == ["fp32"]:
        choice = AccelerationChoice("fp32", list(measured.values()), min_agreement)
    else:
        pair = sample if sample is not None else synthetic_pair(model.pad_size)
        runners = {}
        with tempfile.TemporaryDirectory(prefix="sine_onnx_") as tmp:
            reference = None
            for name in runnable:
                m = measured[name]
                try:
                    segmenter = ACCELERATIONS[name].apply(model, onnx_dir or tmp)
                    result = run_pair(segmenter, pair)  # warm-up (and export), not timed
                except Exception as e:  # noqa: BLE001  (an option that fails is not chosen)
                    if name == "fp32":
                        raise
                    logger.warning("acceleration %r failed on the sample pair: %s", name,
                                   _short(e))
                    m.skipped = f"failed: {_short(e)}"
                    continue
                if reference is None:
                    reference = result
                m.agreement_by_output = agreement(reference, result, sem_seg_thresh)
                m.agreement = min(m.agreement_by_output.values(), default=1.0)
                if name != "fp32" and m.agreement < min_agreement:
                    m.skipped = f"agreement {m.agreement:.4f} < {min_agreement}"
                runners[name] = functools.partial(run_pair, segmenter, pair)
            for name, seconds in _median_seconds(runners, repeats, clock).items():
                measured[name].latency_s = seconds
        qualified = [measured[n] for n in runnable
                     if measured[n].latency_s is not None and measured[n].skipped is None]
        best = min(qualified, key=lambda c: c.latency_s)
        for c in qualified:
            if c is not best:
                c.skipped = f"slower than {best.name}"
        choice = AccelerationChoice(best.name, list(measured.values()), min_agreement)
    if path:
        entries[key_id] = {"key": key, "choice": choice.to_dict()}
        _write_cache(path, entries)
    return choice
